"""Tasks for the shared training loop: each is data + loss + metrics (+ a sample)."""

from scratchgpt.tasks.pretrain import PretrainTask, calc_loss_batch, calc_loss_loader, pretrain

__all__ = ["PretrainTask", "calc_loss_batch", "calc_loss_loader", "pretrain"]
