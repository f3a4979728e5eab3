"""The container the cluster manifests run: one image name everywhere, built by the repository's Dockerfile on
Ray's own image of exactly the Ray and Python versions the project pins."""

from __future__ import annotations

import glob
import os
import re

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMAGE = "ghcr.io/gaia2/gaia2:latest"


def _ray_pin() -> str:
    with open(os.path.join(ROOT, "pyproject.toml")) as f:
        m = re.search(r'"ray\[[a-z,]+\]==([0-9.]+)"', f.read())
    assert m, "pyproject.toml pins ray[...]==X.Y.Z"
    return m.group(1)


def _images(node) -> list[str]:
    if isinstance(node, dict):
        return [v for k, v in node.items() if k == "image" and isinstance(v, str)] + \
            [i for v in node.values() for i in _images(v)]
    if isinstance(node, list):
        return [i for v in node for i in _images(v)]
    return []


def test_the_dockerfile_builds_on_rays_image_of_the_pinned_versions():
    with open(os.path.join(ROOT, "Dockerfile")) as f:
        text = f.read()
    base = re.search(r"^FROM\s+rayproject/ray:([0-9.]+)-py(\d)(\d+)-gpu\s*$", text, re.M)
    assert base, "Dockerfile: FROM rayproject/ray:<version>-py<XY>-gpu"
    assert base.group(1) == _ray_pin()
    with open(os.path.join(ROOT, "pyproject.toml")) as f:
        requires = re.search(r'requires-python\s*=\s*">=(\d)\.(\d+)', f.read())
    assert (base.group(2), base.group(3)) >= (requires.group(1), requires.group(2))
    assert "pip install" in text and "-e ." in text and IMAGE in text


def test_every_manifest_runs_that_image_at_the_pinned_ray_version():
    images, versions = set(), set()
    for path in glob.glob(os.path.join(ROOT, "cluster", "*.yaml")):
        with open(path) as f:
            doc = yaml.safe_load(f)
        images.update(_images(doc))
        spec = (doc or {}).get("spec", {}) if isinstance(doc, dict) else {}
        for cluster in (spec.get("rayClusterSpec"), spec.get("rayClusterConfig")):
            if cluster:
                versions.add(cluster["rayVersion"])
    assert images == {IMAGE}
    assert versions == {_ray_pin()}
