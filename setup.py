"""Build hooks only (everything else is in pyproject.toml): ship `infini_bench_lm_eval.pth` at the root of
site-packages, so that plain `lm_eval --model infini` works after a regular or an editable install
(see `infini_bench/lm_eval_plugin.py`). pip removes the file again on uninstall."""
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.editable_wheel import editable_wheel

PTH = Path(__file__).resolve().parent / "infini_bench" / "infini_bench_lm_eval.pth"


class BuildPyWithPth(build_py):
    def run(self):
        super().run()
        if not self.editable_mode:
            self.copy_file(str(PTH), str(Path(self.build_lib) / PTH.name))

    def get_outputs(self, include_bytecode=True):
        outputs = super().get_outputs(include_bytecode)
        return outputs if self.editable_mode else [*outputs, str(Path(self.build_lib) / PTH.name)]


class EditableWheelWithPth(editable_wheel):
    """An editable wheel holds only import hooks; the .pth goes beside them, into the wheel's root."""

    def _run_build_commands(self, dist_name, unpacked_wheel, build_lib, tmp_dir):
        result = super()._run_build_commands(dist_name, unpacked_wheel, build_lib, tmp_dir)
        shutil.copy(PTH, Path(unpacked_wheel) / PTH.name)
        return result


setup(cmdclass={"build_py": BuildPyWithPth, "editable_wheel": EditableWheelWithPth})
