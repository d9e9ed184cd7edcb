"""Fine-tuning with neural-collapse controls: L2-normalized features (Haas et al. 2023), a fixed
simplex-ETF projector and the KoLeo entropy regularizer (Harun et al. 2025).

The heads live in :mod:`ncprobe.models.nc_heads` and the checkpoint format in
:mod:`ncprobe.models.ncprobe_format`; this package holds the losses, the augmentation and the
training loop (:func:`ncprobe.finetune.train.finetune`).
"""
