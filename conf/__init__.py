"""speechkit's Hydra configs: this folder is the package ``speechkit.conf`` (pyproject.toml's
``package-dir``), so an installed wheel and an editable checkout both find the YAML files with
``importlib.resources.files("speechkit.conf")`` (``speechkit.config.CONF_DIR``)."""
