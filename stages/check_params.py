"""Check params: the whole of ``params.yaml`` against its schema, before any stage does work.

Reads   ``params.yaml``: every key (dvc.yaml tracks the whole file for this stage, so any change reruns it).
Writes  nothing: a stage without outputs, so its running never makes another stage rerun.

Fails with one line per problem (an unknown section or key, a missing one, a wrong type, a value out of its
range, two values that cannot go together), each naming the key, the value and what is allowed. Every other
stage runs the same check when it starts; this one also catches a change that no other stage reads.
"""

from __future__ import annotations

import dataclasses

from arxiv_embed.params import Params, run_stage_check


def main() -> None:
    run_stage_check("check_params")
    sections = [f.name for f in dataclasses.fields(Params)]
    print(f"check_params: params.yaml is valid ({len(sections)} sections: {', '.join(sections)})")


if __name__ == "__main__":
    main()
