"""What the README tour writes into the checkout stays out of `git status`."""

from __future__ import annotations

import subprocess

from tests.support.readme_tour import REPO_ROOT, tour_directories


def test_the_tour_writes_into_ignored_folders_only() -> None:
    folders = tour_directories()
    assert "tour" in folders  # the tour keeps its keys, data, bundles and fleet under tour/
    for folder in sorted(folders):
        probe = f"{folder}/keys/edgefleet.key"
        result = subprocess.run(
            ["git", "check-ignore", "--quiet", "--no-index", probe],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, f"{probe} is not ignored by .gitignore: `git status` would list it"
