"""TensorFlow's own RMSProp as the judge of the engine's TF1 formula (tests/test_head_training.cpp).

Trains the `small` case of teacher_forced_common.py (Dense 256 -> 64 -> 64 -> 2, ReLU, batch 64,
40 steps, class weights [1, 3], no dropout; the same weights and batches as train_reference.py)
with what the TF retrain.py tutorial ran: tf.compat.v1.train.RMSPropOptimizer (decay 0.9,
epsilon 1e-10 or 1.0, momentum 0 or 0.9) on tf.compat.v1.train.exponential_decay (lr0 1e-3, smooth
0.9^(step/10) or staircase 0.5^floor(step/15)) driven by the global step, in tf.compat.v1 graph
mode. Nothing of the formula is written here: TF creates the `rms` (initialised by TF, to one)
and `momentum` slots and applies its ApplyRMSProp kernel. Per step it records the learning rate
the decay schedule produced, the loss, the gradient and the state after the step (variables, rms
and momentum slots), plus the slots as TF initialised them, in the teacher-forcing layout of
teacher_forced_common.py. Writes tf_rmsprop_reference.h5 (~50 MB).
Run: ENGINE_KERAS_PYTHON tests/reference/tf_rmsprop_reference.py --out DIR [--force]  (~15 s)
"""
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import h5py  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import teacher_forced_common as tfc  # noqa: E402

FILE = "tf_rmsprop_reference.h5"
CASE = "small"
VARIANTS = [
    # name, formula, lr0, rho, momentum, eps, decay_rate, decay_steps, staircase
    ("tf1_m0", "tf1", 1e-3, 0.9, 0.0, 1e-10, 0.9, 10, False),
    ("tf1_m0_stair", "tf1", 1e-3, 0.9, 0.0, 1e-10, 0.5, 15, True),
    ("tf1_m09", "tf1", 1e-3, 0.9, 0.9, 1e-10, 0.9, 10, False),
    ("tf1_m09_stair", "tf1", 1e-3, 0.9, 0.9, 1e-10, 0.5, 15, True),
    # epsilon 1.0 (the Inception v3 / slim training setting): with ms >= 0.9^40 the default 1e-10
    # is invisible, 1.0 makes "inside the sqrt" observable.
    ("tf1_m09_eps1", "tf1", 1e-3, 0.9, 0.9, 1.0, 0.9, 10, False),
]


def train(init, xs, ys, v):
    name, formula, lr0, rho, mom, eps, rate, dsteps, stair = v
    steps, batch, inp = xs.shape
    graph = tf.Graph()
    with graph.as_default():
        vs = []
        for i, (kern, bias) in enumerate(init):
            vs.append(tf.compat.v1.Variable(kern, name="dense_%d_kernel" % (i + 1)))
            vs.append(tf.compat.v1.Variable(bias, name="dense_%d_bias" % (i + 1)))
        x = tf.compat.v1.placeholder(tf.float32, [batch, inp])
        y = tf.compat.v1.placeholder(tf.int32, [batch])
        h = x
        for i in range(0, len(vs) - 2, 2):
            h = tf.nn.relu(tf.matmul(h, vs[i]) + vs[i + 1])
        z = tf.matmul(h, vs[-2]) + vs[-1]
        w = tf.gather(tf.constant(tfc.CLASS_WEIGHTS, tf.float32), y)
        ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=z)
        loss = tf.reduce_sum(w * ce) / tf.reduce_sum(w)  # torch CrossEntropyLoss(weight) mean
        global_step = tf.compat.v1.train.get_or_create_global_step()
        lr = tf.compat.v1.train.exponential_decay(lr0, global_step, dsteps, rate, staircase=stair)
        opt = tf.compat.v1.train.RMSPropOptimizer(lr, decay=rho, momentum=mom, epsilon=eps)
        gv = opt.compute_gradients(loss, vs)
        train_op = opt.apply_gradients(gv, global_step=global_step)
        grads = [g for g, _ in gv]
        rms = [opt.get_slot(var, "rms") for var in vs]
        momv = [opt.get_slot(var, "momentum") for var in vs]
        init_op = tf.compat.v1.global_variables_initializer()
    cfg = tf.compat.v1.ConfigProto(intra_op_parallelism_threads=2, inter_op_parallelism_threads=1)
    rec = {"lr": [], "loss": [], "grads": [], "params": [], "ms": [], "mom": []}
    with tf.compat.v1.Session(graph=graph, config=cfg) as sess:
        sess.run(init_op)
        ms0, mom0 = sess.run([rms, momv])
        for s in range(steps):
            assert sess.run(global_step) == s
            feed = {x: xs[s], y: ys[s]}
            # One run: the gradients, the loss and the lr fetched are the ones the update used.
            _, lr_v, loss_v, g_v = sess.run([train_op, lr, loss, grads], feed)
            p_v, ms_v, mom_v = sess.run([vs, rms, momv])
            rec["lr"].append(lr_v)
            rec["loss"].append(loss_v)
            rec["grads"].append(g_v)
            rec["params"].append(p_v)
            rec["ms"].append(ms_v)
            rec["mom"].append(mom_v)
    out = tfc.stack_records(rec, len(init))
    pair = lambda t: [(t[2 * i], t[2 * i + 1]) for i in range(len(init))]  # noqa: E731
    return out, {"ms": pair(ms0), "mom": pair(mom0)}


def main():
    started = tfc.begin(__doc__, FILE, VARIANTS, repr(CASE))
    if started is None:
        return
    a, path, tmp, sig = started
    tf.compat.v1.disable_eager_execution()
    init, xs, ys = tfc.make_case(CASE, a.seed)
    with h5py.File(tmp, "w") as f:
        f.attrs["generator"] = np.bytes_("tensorflow %s" % tf.__version__)
        tfc.write_cases(f, {CASE: (init, xs, ys)}, sig)
        for v in VARIANTS:
            tfc.write_variant_attrs(f, v)
            run, slots0 = train(init, xs, ys, v)
            tfc.write_run(f, v[0], CASE, 0, run, slots0)
            print("%-14s lr %.6g -> %.6g  loss %.5f -> %.5f" % (v[0], run["lr"][0], run["lr"][-1],
                                                            run["loss"][0], run["loss"][-1]))
        f.attrs["complete"] = 1
    os.replace(tmp, path)


if __name__ == "__main__":
    main()
