"""The faulty model as an external program: JSON in on stdin, JSON out on stdout."""

from __future__ import annotations

import json
import sys

from tests.support.faulty import simulate

if __name__ == "__main__":
    request = json.load(sys.stdin)
    behavior = request["params"].get("behavior", "ok")
    if behavior == "not_json":
        print("this is not json")
        sys.exit(0)
    if behavior == "fail":
        print("failing on purpose", file=sys.stderr)
        sys.exit(4)
    outputs = simulate(request["params"], request["seed"])
    print("some log line on stdout")
    print(json.dumps(outputs))
