"""``slimforge submit``'s output flags (issue 18): --format, --gguf-type, --dtype and --hub-repo
become the body's ``output`` section, which the server's own schema accepts."""

from __future__ import annotations

import pytest

from slimforge.cli import build_parser
from slimforge.client._spec import build_job_body
from slimforge.contract.jobs import JobCreate

BASE = ["submit", "--model", "org/model", "--ratio", "0.8", "--method", "minitron"]


def body_of(*flags: str) -> dict:
    return build_job_body(build_parser().parse_args([*BASE, *flags]))


@pytest.mark.parametrize(
    ("flags", "output"),
    [
        ((), None),
        (("--format", "safetensors"), {"formats": ["safetensors"]}),
        (("--gguf-type", "q4_k_m"), {"gguf_type": ["q4_k_m"]}),
        (
            ("--format", "safetensors", "--gguf-type", "f16", "--gguf-type", "q8_0"),
            {"formats": ["safetensors", "gguf"], "gguf_type": ["f16", "q8_0"]},
        ),
        (("--dtype", "bfloat16", "--hub-repo", "acme/small"),
         {"dtype": "bfloat16", "hub_repo": "acme/small"}),
    ],
)  # fmt: skip
def test_output_flags_make_the_output_section(flags: tuple[str, ...], output: dict | None) -> None:
    body = body_of(*flags)
    assert body.get("output") == output
    validated = JobCreate.model_validate(body)  # the server's schema takes it as it is
    if output is not None:
        assert validated.output is not None
        assert validated.output.model_dump(include=set(output)) == output


def test_a_spec_files_output_keeps_what_the_flags_do_not_set(tmp_path) -> None:
    spec = tmp_path / "job.yaml"
    spec.write_text("output:\n  hub_repo: acme/small\n")
    parsed = build_parser().parse_args(["submit", str(spec), "--gguf-type", "q8_0"])
    assert build_job_body(parsed)["output"] == {"hub_repo": "acme/small", "gguf_type": ["q8_0"]}
