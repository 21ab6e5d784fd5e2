"""Packaging hook: a plain (non-editable) install carries ``config.toml`` and the shipped
``models/`` inside the package as ``streamer/_bundle`` (found by ``streamer.core.paths``).
Everything else is declared in pyproject.toml."""

from pathlib import Path
import shutil

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
# What a running ser-live reads from models/: weights, labels, configs, cards. The out-of-fold
# predictions and ablation tables stay in the repository.
SKIP = ("oof_*.json", "ablation.json", "experiments.json", "egemaps_probe.json", "*.png")


class build_py_with_bundle(build_py):
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return  # an editable install reads the checkout itself
        bundle = Path(self.build_lib) / "streamer" / "_bundle"
        shutil.rmtree(bundle, ignore_errors=True)
        bundle.mkdir(parents=True)
        shutil.copy2(HERE / "config.toml", bundle / "config.toml")
        shutil.copytree(HERE / "models", bundle / "models", ignore=shutil.ignore_patterns(*SKIP))
        # the demo recordings (1 MB): ser-live --file on the demo call, ser-call twilio --demo
        shutil.copytree(HERE / "demo", bundle / "demo")


setup(cmdclass={"build_py": build_py_with_bundle})
