"""The GitHub OIDC provider's attribute condition (terraform/iam.tf) against GitHub's tokens.

For each workflow job that authenticates to Google Cloud, the claims GitHub puts in its OIDC
token are written out in GitHub's documented format ("Understanding the OIDC token",
docs.github.com/en/actions/reference/security/oidc), from the job's workflow file: its
triggers, its `environment`, the ref it runs on. The condition is evaluated by cel-python
(a CEL implementation; Google evaluates attribute conditions as CEL, and a condition that
fails to evaluate, e.g. on a missing claim, refuses the token like `false` does).
"""

from __future__ import annotations

import json
import re
import subprocess
from typing import Any

import pytest
import yaml

from tests.deploy.manifests import ROOT, find_tool

WORKFLOWS = ROOT / ".github" / "workflows"
REPOSITORY = "my-org/product-photo-detector"
OWNER_ID = "12345678"
VARIABLES = {"github_repository": REPOSITORY, "github_repository_owner_id": OWNER_ID}
MAIN = "refs/heads/main"

_EVALUATE = r"""
import json, sys
import celpy
request = json.load(sys.stdin)
env = celpy.Environment()
program = env.program(env.compile(request["condition"]))
answers = {}
for name, claims in request["claims"].items():
    try:
        result = program.evaluate({"assertion": celpy.json_to_cel(claims)})
        answers[name] = isinstance(result, celpy.celtypes.BoolType) and bool(result)
    except Exception:  # an evaluation error refuses the token
        answers[name] = False
print(json.dumps(answers))
"""


def attribute_condition() -> str:
    """The provider's condition as Google receives it, with the example variables."""
    text = (ROOT / "terraform" / "iam.tf").read_text()
    (raw,) = re.findall(r'^\s*attribute_condition\s*=\s*"((?:[^"\\]|\\.)*)"', text, re.MULTILINE)
    condition = raw.replace('\\"', '"')
    return re.sub(r"\$\{var\.(\w+)\}", lambda m: VARIABLES[m.group(1)], condition)


def github_claims(
    workflow: str,
    event: str,
    ref: str = MAIN,
    environment: str | None = None,
    job_workflow: str | None = None,
    repository: str = REPOSITORY,
    owner_id: str = OWNER_ID,
) -> dict[str, Any]:
    """An OIDC token's claims as GitHub documents them, for one job."""
    owner = repository.split("/")[0]
    if environment is not None:
        subject = f"repo:{repository}:environment:{environment}"
    elif event == "pull_request":
        subject = f"repo:{repository}:pull_request"
    else:
        subject = f"repo:{repository}:ref:{ref}"
    claims = {
        "jti": "example-id",
        "sub": subject,
        "aud": f"https://github.com/{owner}",
        "ref": ref,
        "sha": "0123456789abcdef0123456789abcdef01234567",
        "repository": repository,
        "repository_owner": owner,
        "repository_owner_id": owner_id,
        "repository_id": "74",
        "repository_visibility": "private",
        "actor": "octocat",
        "actor_id": "12",
        "run_id": "example-run-id",
        "run_number": "10",
        "run_attempt": "1",
        "runner_environment": "github-hosted",
        "workflow": workflow.removesuffix(".yml"),
        "head_ref": "",
        "base_ref": "",
        "event_name": event,
        "ref_type": "branch" if ref.startswith("refs/heads/") else "",
        "workflow_ref": f"{repository}/.github/workflows/{workflow}@{ref}",
        "job_workflow_ref": f"{repository}/.github/workflows/{job_workflow or workflow}@{ref}",
        "iss": "https://token.actions.githubusercontent.com",
        "nbf": 1632492967,
        "exp": 1632493867,
        "iat": 1632493567,
    }
    if environment is not None:
        claims["environment"] = environment
    if event == "pull_request":
        claims |= {"head_ref": "feature", "base_ref": "main", "ref_type": ""}
    return claims


def _triggers(workflow: dict[str, Any]) -> list[str]:
    on = workflow.get("on", workflow.get(True))  # PyYAML reads the key `on` as True
    return list(on) if isinstance(on, dict) else [on]


def authenticating_jobs() -> dict[str, dict[str, Any]]:
    """Every job that runs google-github-actions/auth, with the claims of each way it runs."""
    workflows = {p.name: yaml.safe_load(p.read_text()) for p in WORKFLOWS.glob("*.yml")}
    callers = {  # workflow file -> workflows that call it as a reusable workflow
        name: [
            caller
            for caller, text in workflows.items()
            for job in text["jobs"].values()
            if job.get("uses") == f"./.github/workflows/{name}"
        ]
        for name in workflows
    }
    found = {}
    for name, workflow in workflows.items():
        for job_id, job in workflow["jobs"].items():
            uses = [str(step.get("uses", "")) for step in job.get("steps", [])]
            if not any(u.startswith("google-github-actions/auth") for u in uses):
                continue
            runs = []
            for trigger in _triggers(workflow):
                if trigger == "workflow_call":
                    for caller in callers[name]:
                        for caller_trigger in _triggers(workflows[caller]):
                            runs.append((caller, caller_trigger, name))
                else:
                    runs.append((name, trigger, None))
            for top, event, called in runs:
                key = f"{name}:{job_id} ({event} of {top})"
                found[key] = github_claims(
                    top, event, environment=job.get("environment"), job_workflow=called
                )
    return found


def evaluate(claims: dict[str, dict[str, Any]]) -> dict[str, bool]:
    python = find_tool("python")
    tools_python = ROOT / ".venv-tools" / "bin" / "python"
    python = str(tools_python) if tools_python.exists() else python
    probe = subprocess.run([python, "-c", "import celpy"], capture_output=True, timeout=60)
    if probe.returncode != 0:
        pytest.skip("cel-python is not installed (`make deploy-tools` puts it in .venv-tools)")
    result = subprocess.run(
        [python, "-c", _EVALUATE],
        input=json.dumps({"condition": attribute_condition(), "claims": claims}),
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    return json.loads(result.stdout)


def test_every_job_that_authenticates_is_found():
    jobs = authenticating_jobs()
    assert {key.split(" ")[0] for key in jobs} == {
        "images.yml:tag",
        "images.yml:build",
        "deploy.yml:deploy",
        "train.yml:run",
        "train.yml:gate-and-shadow",
    }
    production = [c for c in jobs.values() if c.get("environment") == "production"]
    assert production and all(
        c["sub"] == f"repo:{REPOSITORY}:environment:production" for c in production
    )


def test_the_condition_accepts_every_job_that_authenticates_on_main():
    answers = evaluate(authenticating_jobs())
    assert answers and all(answers.values()), answers


@pytest.mark.parametrize(
    "name,claims",
    [
        ("pull request", github_claims("ci.yml", "pull_request", ref="refs/pull/7/merge")),
        ("feature branch", github_claims("train.yml", "workflow_dispatch", ref="refs/heads/x")),
        (
            "production environment on a feature branch",
            github_claims("deploy.yml", "workflow_dispatch", "refs/heads/x", "production"),
        ),
        ("another environment", github_claims("deploy.yml", "workflow_dispatch", MAIN, "staging")),
        ("a tag", github_claims("deploy.yml", "push", ref="refs/tags/main")),
        ("another repository", github_claims("ci.yml", "push", repository="my-org/other")),
        ("a re-created owner of the same name", github_claims("ci.yml", "push", owner_id="99")),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_the_condition_refuses(name, claims):
    assert evaluate({name: claims}) == {name: False}


def test_a_token_without_the_ref_claim_is_refused():
    claims = github_claims("ci.yml", "push")
    del claims["ref"]
    assert evaluate({"no ref": claims}) == {"no ref": False}
