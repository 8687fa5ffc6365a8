"""transformers' own common test suites on jetmoe-model's classes (``nox -s "hf-tests(jetmoe-model)"``);
the sdist extraction and its stand-ins live in ``tensor_utils_dev.testing.hf_sdist``."""

from tensor_utils_dev.testing.hf_sdist import (  # noqa: F401  (pytest hooks for this folder)
    pytest_collection_modifyitems,
    pytest_configure,
)
