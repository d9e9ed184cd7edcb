"""Fine-tuning with neural-collapse controls: L2-normalized features (Haas et al. 2023), a fixed
simplex-ETF projector and the KoLeo entropy regularizer (Harun et al. 2025).

Import the pieces from their modules (``heads``, ``losses``, ``io``, ``train``); importing this
package stays cheap so that ``ncprobe.checkpoint`` can call :func:`ncprobe.finetune.io.build_model_from_meta`.
"""
