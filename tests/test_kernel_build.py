"""First use of the C++ kernels: ``crossent build`` builds them ahead of time, a build says
so on one stderr line (and what it took), and a process that waits on another one's build
says that too, instead of hanging silently.

A real compile takes a minute or two, so these tests give the build a stand-in compiler
(``$CXX``) that writes empty objects and "links" a copy of the library this session already
built: the compile orchestration, the messages, the lock and the cache run for real."""

import fcntl
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
_ext = pytest.importorskip("crossent.torch._ext")


@pytest.fixture
def fake_cxx(tmp_path):
    if not _ext.load():
        pytest.skip(f"C++ kernel unavailable: {_ext.info()['error']}")
    script = tmp_path / "fake-g++"
    script.write_text(textwrap.dedent(f"""\
        #!{sys.executable}
        import shutil, sys
        args = sys.argv[1:]
        out = args[args.index("-o") + 1]
        if "-c" in args:
            open(out, "w").write("object")
        else:
            shutil.copy({_ext.info()['library']!r}, out)
        """))
    script.chmod(0o755)
    env = {**os.environ, "CXX": str(script), "CROSSENT_CACHE_DIR": str(tmp_path / "cache")}
    env.pop("CROSSENT_NO_EXT", None)
    return env


def _crossent(env, *args):
    return subprocess.run([sys.executable, "-m", "crossent", *args], env=env,
                          capture_output=True, text=True, timeout=300)


def test_build_command_builds_once_and_says_so(fake_cxx):
    first = _crossent(fake_cxx, "build")
    assert first.returncode == 0, first.stderr
    assert "compiling the C++ CPU kernel, once" in first.stderr
    assert "kernel built in" in first.stderr
    assert first.stdout.startswith("C++ kernel ready (built in")
    libs = list(Path(fake_cxx["CROSSENT_CACHE_DIR"]).glob("torch-ext-*/crossent_ext.so"))
    assert len(libs) == 1
    again = _crossent(fake_cxx, "build")
    assert again.returncode == 0
    assert again.stderr == ""  # nothing to build, nothing said
    assert "found in the cache" in again.stdout


def test_a_failed_build_is_reported_and_exits_1(fake_cxx, tmp_path):
    broken = tmp_path / "broken-g++"
    broken.write_text(f"#!{sys.executable}\nimport sys\nsys.exit('no such header')\n")
    broken.chmod(0o755)
    out = _crossent({**fake_cxx, "CXX": str(broken)}, "build")
    assert out.returncode == 1
    assert "C++ kernel unavailable" in out.stderr and "no such header" in out.stderr


def test_disabled_kernel_is_not_a_failure(fake_cxx):
    out = _crossent({**fake_cxx, "CROSSENT_NO_EXT": "1"}, "build")
    assert out.returncode == 0
    assert "disabled by CROSSENT_NO_EXT" in out.stderr


def test_a_process_waiting_on_anothers_build_says_so(fake_cxx):
    assert _crossent(fake_cxx, "build").returncode == 0
    (lib,) = Path(fake_cxx["CROSSENT_CACHE_DIR"]).glob("torch-ext-*/crossent_ext.so")
    lib.unlink()  # the next process must build it again, after the lock
    with open(lib.parent / "build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # "another process" is building
        proc = subprocess.Popen([sys.executable, "-m", "crossent", "build"], env=fake_cxx,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        first_line = proc.stderr.readline()
        assert "waiting for another process to finish building" in first_line
        assert proc.poll() is None  # still blocked on the lock
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert "compiling the C++ CPU kernel" in err
    assert lib.exists()
