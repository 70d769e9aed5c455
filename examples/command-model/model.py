"""The built-in SEIR model as an external program (the simstudy command-model contract).

Reads {"params": {...}, "seed": N} on stdin, prints one JSON object of outputs as the
last line of stdout; anything on stderr goes to the replicate's log file.
"""

import json
import sys

from simstudy.models.seir import simulate

request = json.load(sys.stdin)
outputs = simulate(request["params"], request["seed"])
print(f"seed {request['seed']}: attack rate {outputs['attack_rate']:.3f}", file=sys.stderr)
print(json.dumps({**outputs, "incidence": outputs["incidence"].tolist()}))
