"""The Dockerfiles' structure (no Docker engine here): base, user, entrypoint, copies, cache."""

from __future__ import annotations

import fnmatch
import json
import re
import tomllib
from pathlib import Path

import pytest

from conftest import REPO

IMAGES = {
    "gpu": (REPO / "docker" / "Dockerfile", "nvcr.io/nvidia/tensorrt:", "https://download.pytorch.org/whl/cu"),
    "cpu": (REPO / "docker" / "Dockerfile.cpu", "python:3.1", "https://download.pytorch.org/whl/cpu"),
}


def parse(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    buf = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if buf and line.startswith("#"):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        word, _, rest = buf.partition(" ")
        out.append((word.upper(), rest.strip()))
        buf = ""
    return out


def stages(instr: list[tuple[str, str]]) -> tuple[dict[str, str], list[list[tuple[str, str]]]]:
    """Global ARG defaults and the list of stages (each starting with its FROM)."""
    glob: dict[str, str] = {}
    result: list[list[tuple[str, str]]] = []
    for word, rest in instr:
        if word == "FROM":
            result.append([(word, rest)])
        elif result:
            result[-1].append((word, rest))
        elif word == "ARG":
            k, _, v = rest.partition("=")
            glob[k] = v
    return glob, result


def args_of(stage: list[tuple[str, str]], base: dict[str, str]) -> dict[str, str]:
    env = dict(base)
    for word, rest in stage:
        if word == "ARG":
            k, _, v = rest.partition("=")
            env[k] = v or env.get(k, "")
    return env


def expand(text: str, env: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: env.get(m.group(1) or m.group(2), m.group(0)), text)


def env_vars(stage: list[tuple[str, str]]) -> dict[str, str]:
    out = {}
    for word, rest in stage:
        if word == "ENV":
            for k, v in re.findall(r"(\w+)=(\S+)", rest):
                out[k] = v
    return out


def dockerignore() -> list[str]:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]


def ignored(rel: str, patterns: list[str]) -> bool:
    parts = Path(rel).parts
    for pat in patterns:
        if pat.startswith("!"):
            continue
        pat = pat.rstrip("/")
        for i in range(1, len(parts) + 1):
            prefix = "/".join(parts[:i])
            if fnmatch.fnmatch(prefix, pat) or fnmatch.fnmatch(prefix, pat.replace("**/", "")):
                return True
    return False


@pytest.mark.parametrize("kind", sorted(IMAGES))
def test_dockerfile_structure(kind):
    path, base_prefix, torch_index = IMAGES[kind]
    glob, stage_list = stages(parse(path))
    assert glob["BASE_IMAGE"].startswith(base_prefix), glob
    if kind == "cpu":
        assert "slim" in glob["BASE_IMAGE"]
    runtime = stage_list[-1]
    assert expand(runtime[0][1], glob) == glob["BASE_IMAGE"]  # FROM ${BASE_IMAGE}
    args = args_of(runtime, glob)
    words = [w for w, _ in runtime]

    # non-root user, created in the image, and the entrypoint
    users = [rest for w, rest in runtime if w == "USER"]
    assert users and users[-1] not in ("root", "0") and not users[-1].startswith("0:")
    assert any(w == "RUN" and f"useradd" in r and users[-1] in r for w, r in runtime)
    entry = [rest for w, rest in runtime if w == "ENTRYPOINT"]
    assert entry and json.loads(entry[-1]) == ["hdrvideo"]
    assert words.index("USER") < words.index("ENTRYPOINT")

    # torch from the right wheel index first, then the project (with the GPU/CPU extras)
    runs = [expand(r, {**args, **env_vars(runtime)}) for w, r in runtime if w == "RUN"]
    assert args["TORCH_INDEX_URL"].startswith(torch_index)
    torch_run = next(i for i, r in enumerate(runs) if "--index-url" in r and "torch" in r)
    project_run = next(i for i, r in enumerate(runs) if "hdrvideo-" in r and ".whl" in r)
    assert torch_run < project_run
    extras = set(args["EXTRAS"].split(","))
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert extras <= set(declared), extras - set(declared)
    assert ("tensorrt" in extras) == (kind == "gpu")
    assert "pip wheel" in " ".join(r for st in stage_list[:-1] for w, r in st if w == "RUN")

    # prebuilt engines baked in with a build arg; the cache directory is a mountable volume
    assert "PREBUILT" in args
    assert any(w == "COPY" and "${PREBUILT}" in r for w, r in runtime)
    cache = env_vars(runtime)["HDRVIDEO_CACHE"]
    volumes = [v for w, r in runtime if w == "VOLUME" for v in json.loads(r)]
    assert cache in volumes
    if kind == "gpu":
        assert "video" in env_vars(runtime)["NVIDIA_DRIVER_CAPABILITIES"]  # NVENC

    # every file a COPY takes from the build context exists and is not .dockerignore'd
    patterns = dockerignore()
    for st in stage_list:
        st_args = args_of(st, glob)
        for w, rest in st:
            if w != "COPY" or "--from=" in rest:
                continue
            *sources, _dest = [expand(tok, st_args) for tok in rest.split() if not tok.startswith("--")]
            for src in sources:
                rel = src.rstrip("/") or "."
                assert (REPO / rel).exists(), f"{path.name}: COPY {src} does not exist"
                assert not ignored(rel, patterns), f"{path.name}: COPY {src} is excluded by .dockerignore"


def test_dockerignore_keeps_the_context_small():
    patterns = dockerignore()
    for rel in (".git", ".venv", "tests", "runs", "hdrvideo/__pycache__", "film.mp4"):
        assert ignored(rel, patterns), rel
    for rel in ("hdrvideo/cli.py", "presets/bt2408.toml", "pyproject.toml", "docker/prebuilt/README.md"):
        assert not ignored(rel, patterns), rel
