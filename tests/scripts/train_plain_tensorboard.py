"""A plain PyTorch training loop logging to TensorBoard the way tutorials do (no Trainer, no ftui):
``Loss/train`` every step, ``Loss/val`` and ``Accuracy/val`` every 5 steps, ``lr`` too."""
import argparse
import time

import torch
from torch.utils.tensorboard import SummaryWriter


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--logdir", required=True)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--step_delay", type=float, default=0.0)
    args = p.parse_args()
    torch.manual_seed(0)
    x = torch.randn(256, 8)
    y = (x.sum(dim=1) > 0).long()
    model = torch.nn.Linear(8, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    writer = SummaryWriter(args.logdir)
    for step in range(1, args.steps + 1):
        loss = torch.nn.functional.cross_entropy(model(x[:192]), y[:192])
        opt.zero_grad()
        loss.backward()
        opt.step()
        writer.add_scalar("Loss/train", loss.item(), step)
        writer.add_scalar("lr", opt.param_groups[0]["lr"], step)
        if step % 5 == 0:
            with torch.no_grad():
                logits = model(x[192:])
                writer.add_scalar("Loss/val", torch.nn.functional.cross_entropy(logits, y[192:]).item(), step)
                writer.add_scalar("Accuracy/val", (logits.argmax(1) == y[192:]).float().mean().item(), step)
        writer.flush()
        print(f"step {step} loss {loss.item():.6f}", flush=True)
        time.sleep(args.step_delay)
    writer.close()


if __name__ == "__main__":
    main()
