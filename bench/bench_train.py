"""Training step: the project's fastai Learner (`chexpert_learner`) vs a plain PyTorch loop, same everything else.

Same model (a copy of the Learner's DenseNet-121), same size, batch, loss (`ChexpertLoss`) and optimizer settings
(Adam, lr 1e-4, betas 0.9/0.999, eps 1e-8, no weight decay: fastai's `paper_adam` vs `torch.optim.Adam`), same
batches: both are fed batches collated once from the project's DataLoaders, so the comparison is of the training
step only (forward, loss, backward, optimizer step, and for fastai its callbacks). Step times exclude fetching the
batch. Small by default (64 px, batch 16, 1 torch thread) so that it runs in a minute or two on a 2-core CPU.
Steps alternate (a fastai step, then the plain loop's step on the same batch); the first steps of each round are
warm-up; the ratio is the median over steps of plain step time / fastai step time.
Target: fastai images/s >= 0.9 x plain. Last line: `RATIO train_fastai_over_plain: ... (target >= 0.9)`.
Usage: python bench/bench_train.py [--size 64] [--bs 16] [--steps 8] [--rounds 2] [--threads 1]
"""
import argparse, copy, sys, tempfile, time
from pathlib import Path
sys.path.insert(0, str(Path(__file__).parent))
from common import header, med, verdict, run_quiet, bench_sample

TARGET = 0.9


def main(size=64, bs=16, steps=8, rounds=2, warmup=2, threads=1, patients=100) -> int:
    run_quiet()
    import torch
    if threads: torch.set_num_threads(threads)
    from fastai.vision.all import Callback, CancelFitException
    from chexpert_nb.data import read_chexpert_csv
    from chexpert_nb.labels import ChexpertLoss
    from chexpert_nb.bundle import BundleConfig
    from chexpert_nb.learner import chexpert_dls, chexpert_learner
    header(f'Training step: DenseNet-121 at {size} px, batch {bs}, CPU, torch threads {torch.get_num_threads()}')
    root = bench_sample(patients)
    train = read_chexpert_csv(root/'train.csv', root=root); valid = read_chexpert_csv(root/'valid.csv', root=root)
    dls = chexpert_dls(train, valid, size=size, bs=bs, num_workers=0, device=torch.device('cpu'))
    batches = [(x.as_subclass(torch.Tensor).clone(), y.as_subclass(torch.Tensor).clone())
               for _, (x, y) in zip(range(warmup + steps), dls.train)]
    assert len(batches) == warmup + steps, f"need {warmup + steps} batches of {bs}, the sample gives {len(batches)}"
    config = BundleConfig('bench-train', pretrained=False, size=size)
    learn = chexpert_learner(dls, config, path=tempfile.mkdtemp())
    model = copy.deepcopy(learn.model)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=0)
    loss_func = ChexpertLoss(config.policy)

    def plain_step(x, y):
        model.train(); t0 = time.perf_counter()
        loss = loss_func(model(x), y); loss.backward(); opt.step(); opt.zero_grad()
        return time.perf_counter() - t0

    class Paired(Callback):
        "Serve the precollated batches in order; after each fastai step, the plain loop's step on the same batch."
        order = 100
        def before_fit(self): self.i, self.fastai, self.plain = 0, [], []
        def before_batch(self):
            self.learn.xb, self.learn.yb = (batches[self.i][0],), (batches[self.i][1],)
            self.t0 = time.perf_counter()
        def after_batch(self):
            self.fastai.append(time.perf_counter() - self.t0)
            self.plain.append(plain_step(*batches[self.i])); self.i += 1
            if self.i == len(batches): raise CancelFitException()

    fa, pl = [], []
    for r in range(rounds):  # fastai and plain steps alternate, so that load from other processes hits both alike
        paired = Paired()
        with learn.no_bar(), learn.no_logging(): learn.fit(1, 1e-4, cbs=[paired])
        fa += paired.fastai[warmup:]; pl += paired.plain[warmup:]
        print(f"   round {r + 1}: fastai {bs / med(paired.fastai[warmup:]):.1f} img/s, "
              f"plain {bs / med(paired.plain[warmup:]):.1f} img/s", flush=True)
    f_ips, p_ips = bs / med(fa), bs / med(pl)
    paired_ratio = med([p / f for f, p in zip(fa, pl)])
    print(f"   fastai Learner (chexpert_learner, fit)   {f_ips:7.1f} img/s  (median step {med(fa):.3f}s, n={len(fa)})")
    print(f"   plain PyTorch loop (baseline)            {p_ips:7.1f} img/s  (median step {med(pl):.3f}s, n={len(pl)})")
    print(f"   median over steps of plain/fastai step time: {paired_ratio:.3f}")
    return verdict('train_fastai_over_plain', paired_ratio, TARGET, '>=')


if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--size', type=int, default=64); ap.add_argument('--bs', type=int, default=16)
    ap.add_argument('--steps', type=int, default=8); ap.add_argument('--rounds', type=int, default=2)
    ap.add_argument('--threads', type=int, default=1, help='torch threads (0: leave as is)')
    a = ap.parse_args()
    sys.exit(main(a.size, a.bs, a.steps, a.rounds, threads=a.threads))
