"""Every command line of the README's bash blocks runs as written, on tiny data this test writes.

The README is the first thing a newcomer follows: a command there that fails, or an
option it names that does not exist, is a bug. This test reads the bash blocks, puts
tiny real photos where the placeholders are (PHOTOS_DIR, QUERY.jpg, …) and runs each
command in order in one folder, as a user pasting them would.
"""
import os
import re
import shlex
import shutil

import pytest

from imret_cli import ONE_THREAD, command

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
README = os.path.join(REPO, "README.md")

# Commands not run here, and why.
SKIPPED = {
    "pip": "installs packages (needs the network); .ci/run runs it",
    "python": "the test suite itself (and the benchmarks) are not run from inside the tests",
    "python3": "the test suite itself (the README's test command, as .ci/run runs it)",
    "imret serve": "runs a server until stopped; tests/service drive the same app",
    "imret demo": "takes minutes on real photos; .ci/run runs it and tests/evaluation/test_demo.py "
                  "covers its report on a smaller set",
}

# Appended to 'imret train' lines only to keep the test short: the arguments as written are all kept.
QUICK_TRAIN = ["--steps", "2", "--batch", "2", "--views", "2", "--negatives", "1", "--max-size", "96",
               "--refresh-every", "1"]


def readme_commands() -> list[str]:
    """The command lines of the README's ```bash blocks, comments dropped, '&&' chains split."""
    text = open(README, encoding="utf-8").read()
    out = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            out += [part.strip() for part in line.split("&&") if part.strip()]
    return out


def skip_reason(cmd: str) -> str | None:
    return next((why for start, why in SKIPPED.items() if cmd == start or cmd.startswith(start + " ")), None)


@pytest.fixture(scope="module")
def tiny(photoset, tmp_path_factory):
    """Placeholder → a real path of tiny data, and the folder the commands run in."""
    root = tmp_path_factory.mktemp("readme")
    originals = [p for p in photoset.db if "distractor" not in p][:6]
    photos, more, inst = root / "photos", root / "more", root / "instances"
    for d in (photos, more, inst):
        d.mkdir()
    for p in originals[:5]:
        shutil.copy(p, photos)
    shutil.copy(originals[5], more)
    name = lambda p: os.path.basename(p).rsplit(".", 1)[0]  # noqa: E731
    query = next(q for q in photoset.queries if os.path.basename(q).startswith(name(originals[0]) + "__crop"))
    pairs = []
    for p in originals[:3]:  # instance folders and pairs: the photo and two altered copies of it
        (inst / name(p)).mkdir()
        shutil.copy(p, inst / name(p))
        for kind in ("rotate", "jpeg"):
            q = os.path.join(photoset.root, "queries", f"{name(p)}__{kind}.jpg")
            shutil.copy(q, inst / name(p))
            pairs.append(f"{p}\t{q}")
    (root / "pairs.tsv").write_text("\n".join(pairs) + "\n")
    subs = {"PHOTOS_DIR": str(photos), "QUERY.jpg": query, "MORE_DIR": str(more),
            "PATH_OR_FOLDER...": str(photos / os.path.basename(originals[4])),
            "INSTANCES_DIR": str(inst), "DIR": str(inst), "pairs.tsv": str(root / "pairs.tsv")}
    return root, subs


def test_the_readme_has_the_commands_this_test_knows():
    cmds = readme_commands()
    assert len(cmds) >= 20
    words = {w for c in cmds for w in shlex.split(c) if w.isupper() or w.endswith((".jpg", ".tsv", "..."))}
    assert words - {"SECRET"} <= {"PHOTOS_DIR", "QUERY.jpg", "MORE_DIR", "PATH_OR_FOLDER...", "INSTANCES_DIR",
                                  "DIR", "pairs.tsv"}, "a new placeholder: give it tiny data in tiny()"


def test_every_readme_command_runs_as_written(tiny):
    import subprocess

    root, subs = tiny
    # the commands run in the data's folder: the imret under test must still be this checkout's
    env = {**ONE_THREAD, "PYTHONPATH": os.pathsep.join(filter(None, [REPO, os.environ.get("PYTHONPATH")]))}
    ran, skipped = [], []
    for cmd in readme_commands():
        why = skip_reason(cmd)
        if why:
            skipped.append((cmd, why))
            continue
        argv = [subs.get(w, w) for w in shlex.split(cmd)]
        assert argv[0] == "imret", cmd
        if argv[1] == "train":
            argv += QUICK_TRAIN
        proc = subprocess.run(command(*argv[1:]) + (["-q"] if argv[1] in ("index", "add", "eval") else []),
                              cwd=root, capture_output=True, text=True, env=env, timeout=600)
        assert proc.returncode == 0, f"README command failed ({proc.returncode}): {cmd}\n{proc.stderr[-3000:]}"
        assert "Traceback" not in proc.stderr, cmd
        ran.append(cmd)
    print(f"ran {len(ran)} README commands; skipped {len(skipped)}:")
    for cmd, why in skipped:
        print(f"  {cmd}: {why}")
    assert len(ran) >= 18
    assert {c.split()[1] for c in ran} >= {"index", "search", "add", "remove", "info", "presets", "eval", "train"}
