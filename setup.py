"""Build hook for loglake's optional C extension (the fast push decoder); everything else is in pyproject.toml."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "loglake.ingest._pushdecode",
            sources=["loglake/ingest/_pushdecode.c"],
            extra_compile_args=["-O2"],
            # Without a compiler `pip install .` still succeeds; decode.py then uses the pure-Python path.
            optional=True,
        )
    ]
)
