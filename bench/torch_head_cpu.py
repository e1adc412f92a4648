"""PyTorch CPU twin of bench/bench_head.cpp's BM_HeadTrainStep: one training step of the head
(2048 -> 512 -> 512 -> 2, ReLU, dropout 0.5, weighted softmax cross-entropy, torch RMSprop) at
batch 128 on 2 threads; prints steps/s for the C++/PyTorch ratio.
Run: /usr/bin/python3 bench/torch_head_cpu.py [--steps 50]
"""
import argparse
import time

import torch


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=50)
    a = ap.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(2048, 512), torch.nn.ReLU(), torch.nn.Dropout(0.5),
        torch.nn.Linear(512, 512), torch.nn.ReLU(), torch.nn.Dropout(0.5),
        torch.nn.Linear(512, 2))
    model.train()
    opt = torch.optim.RMSprop(model.parameters(), lr=1e-3, alpha=0.9, eps=1e-10)
    loss_fn = torch.nn.CrossEntropyLoss(weight=torch.tensor([1.0, 4.0]))
    x = torch.rand(128, 2048)
    y = torch.arange(128) % 2

    def step():
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        return loss

    for _ in range(5):
        step()
    t0 = time.perf_counter()
    for _ in range(a.steps):
        step()
    dt = time.perf_counter() - t0
    print("torch %s, 2 threads: %.2f ms/step, %.1f steps/s" % (torch.__version__, 1e3 * dt / a.steps,
                                                                a.steps / dt))


if __name__ == "__main__":
    main()
