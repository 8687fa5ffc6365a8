"""The release workflow's rules: tags name a published member at its version, CI passes on the
tagged commit before anything is built, third-party actions are pinned by commit."""

from __future__ import annotations

import importlib.util
import re

import pytest

from tools.workspace import ROOT, members

WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
spec = importlib.util.spec_from_file_location(
    "release_tag", ROOT / ".github/scripts/release_tag.py"
)
assert spec and spec.loader
release_tag = importlib.util.module_from_spec(spec)
spec.loader.exec_module(release_tag)


def version_of(name: str) -> str:
    import tomllib

    m = next(m for m in members() if m.name == name)
    return tomllib.loads((m.path / "pyproject.toml").read_text())["project"]["version"]


def test_tag_with_a_dashed_distribution_name_resolves():
    version = version_of("llm-efficiency-tensor-utils")
    facts = release_tag.resolve(f"llm-efficiency-tensor-utils-v{version}")
    assert facts == {
        "dist": "llm-efficiency-tensor-utils",
        "module": "tensor_utils",
        "version": version,
    }


@pytest.mark.parametrize(
    ("tag", "reason"),
    [
        ("tensor-utils-dev-v{dev}", "private"),
        ("tensor-utils-v{shared}", "no workspace member"),  # the folder name is not the dist
        ("llm-efficiency-tensor-utils-v9.9.9", "says 9.9.9"),
        ("llm-efficiency-tensor-utils-v0.2", "not <distribution>-vX.Y.Z"),
        ("v0.2.0", "not <distribution>-vX.Y.Z"),
    ],
)
def test_bad_tags_are_refused_with_one_line(tag, reason):
    tag = tag.format(
        dev=version_of("tensor-utils-dev"), shared=version_of("llm-efficiency-tensor-utils")
    )
    with pytest.raises(release_tag.ReleaseError, match=re.escape(reason)) as info:
        release_tag.resolve(tag)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.name)
def test_third_party_actions_are_pinned_by_commit(workflow):
    uses = re.findall(r"^\s*(?:-\s*)?uses:\s*(\S+)", workflow.read_text(), flags=re.M)
    assert uses
    for ref in uses:
        if ref.startswith("./"):
            continue  # a workflow of this repository, at the same commit
        assert re.fullmatch(r"[\w.-]+/[\w./-]+@[0-9a-f]{40}", ref), f"{workflow.name}: {ref}"


def test_publish_builds_only_after_ci_passes_on_the_tagged_commit():
    yaml = pytest.importorskip("yaml")
    ci = yaml.safe_load((ROOT / ".github/workflows/ci.yml").read_text())
    publish = yaml.safe_load((ROOT / ".github/workflows/publish.yml").read_text())
    assert "workflow_call" in ci[True]  # PyYAML reads the key `on` as True
    jobs = publish["jobs"]
    assert jobs["ci"]["uses"] == "./.github/workflows/ci.yml"  # same commit as the tag
    assert "ci" in jobs["build"]["needs"] and "build" in jobs["publish"]["needs"]
    assert "tag" in jobs["ci"]["needs"]  # a refused tag never reaches the build
    assert "id-token" not in str(jobs["build"]) and jobs["publish"]["permissions"] == {
        "id-token": "write"
    }
    steps = "\n".join(str(s) for s in jobs["tag"]["steps"])
    assert ".github/scripts/release_tag.py" in steps
