"""Hold the README to the code: its API paths, config and commands exist as shown."""

from __future__ import annotations

import json
import re
from pathlib import Path

import click
import pytest
import yaml
from starlette.routing import Route

from socmeth.api.app import create_app
from socmeth.api.schemas import JobIn
from socmeth.cli import cli
from socmeth.config import load_config
from socmeth.node import Node

README = (Path(__file__).parents[2] / "README.md").read_text()


def code_blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.DOTALL)


def api_routes() -> set[tuple[str, str]]:
    """List what the app serves: the OpenAPI paths plus the document's own routes."""
    app = create_app(Node(load_config(environ={})))
    served = {
        (method.upper(), path)
        for path, methods in app.openapi()["paths"].items()
        for method in methods
    }
    for route in app.routes:
        if isinstance(route, Route) and route.methods:
            served.update((method, route.path) for method in route.methods)
    return {(method, re.sub(r"\{[^}]+\}", ":id", path)) for method, path in served}


def readme_routes() -> set[tuple[str, str]]:
    found = set()
    for line in re.findall(r"^\| `([^|]+)` \|", README, flags=re.MULTILINE):
        for part in line.split("`, `"):
            method, _, path = part.strip("`").partition(" ")
            if method in {"GET", "POST", "PUT", "DELETE"}:
                found.add((method, re.sub(r":\w+", ":id", path.split("`")[0])))
    return found


def test_every_api_path_of_the_readme_is_served() -> None:
    documented = readme_routes()
    served = api_routes()

    assert ("POST", "/api/jobs") in documented
    assert len(documented) >= 12
    assert documented - served == set()


def test_the_readme_config_example_is_valid(tmp_path: Path) -> None:
    (block,) = [b for b in code_blocks("yaml") if "scheduler:" in b]
    path = tmp_path / "config.yaml"
    path.write_text(block)

    config = load_config(path, environ={})

    assert yaml.safe_load(block)["workers"]["count"] == config.workers.count


def test_the_readme_curl_example_is_a_valid_job() -> None:
    (curl,) = [b for b in code_blocks("bash") if "-d '" in b]
    body = json.loads(curl.split("-d '", 1)[1].rsplit("'", 1)[0])

    job = JobIn.model_validate(body)

    assert job.name == "backup-database"


@pytest.mark.parametrize("command", ["serve", "migrate"])
def test_the_readme_commands_and_flags_exist(command: str) -> None:
    usages = re.findall(rf"^socmeth {command} (.*)$", README, flags=re.MULTILINE)
    assert usages, f"the README shows no `socmeth {command}` line"
    flags = {flag for usage in usages for flag in re.findall(r"--[a-z-]+", usage)}
    group = cli
    assert isinstance(group, click.Group)
    params = group.commands[command].params

    offered = {opt for p in params for opt in p.opts}

    assert flags <= offered
