"""mmjax: contrastive multimodal pretraining (CLIP, SigLIP) in JAX/Flax."""

__version__ = "0.1.0"
