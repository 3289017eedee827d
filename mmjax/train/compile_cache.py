"""JAX's persistent compilation cache: a restart on the same topology skips compiling.

`config.compile_cache_dir`: "" turns it off; a relative path is inside the workdir (so
a resumed run finds what its previous attempt compiled); an absolute or gs:// path can be
shared by runs. The cache is trusted code: point it only at storage you control.
"""

import logging
import os

import jax
from jax.experimental.compilation_cache import compilation_cache

from mmjax import storage


def cache_dir(setting: str, workdir: str) -> str:
    if not setting:
        return ""
    if "://" in setting or os.path.isabs(setting):
        return setting
    return storage.join(workdir, setting)


def enable(setting: str, workdir: str) -> str:
    """Points JAX's cache at `setting` (see the module doc); returns the directory used."""
    path = cache_dir(setting, workdir)
    current = jax.config.jax_compilation_cache_dir
    if path == (current or ""):
        return path
    if current:
        compilation_cache.reset_cache()  # the cache latches its directory on first use
    jax.config.update("jax_compilation_cache_dir", path or None)
    if path:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        logging.info("Compilation cache: %s", path)
    return path
