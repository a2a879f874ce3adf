"""Re-attack, with another quantizer, only the images whose ensemble files failed in an earlier
scaling run (issue 9: the files must fool all six members).

Usage: python studies/rerun_ensemble_failures.py IMAGES --from runs/scaling-lite0 \
           --out runs/scaling-lite0-scaled [--quantize scaled] [--config ens-worst] [--limit 60] [--steps 50]
Adds rows to OUT's store (results.sqlite; images already there are skipped); compare the two
folders with studies/compare_ensemble_files.py.
"""

import argparse
from pathlib import Path

from advimage.data import discover
from advimage.experiments.scaling import MemberPanel, attack_config, load_rows, prepare_bases
from advimage.models import load_model

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("images")
p.add_argument("--from", dest="source", required=True)
p.add_argument("--out", required=True)
p.add_argument("--quantize", default="scaled")
p.add_argument("--config", default="ens-worst")
p.add_argument("--limit", type=int, default=60)
p.add_argument("--steps", type=int, default=50)
p.add_argument("--model", default="efficientnet_lite0")
args = p.parse_args()
src, out = Path(args.source), Path(args.out)
old = load_rows(src, args.config)
failed = {r.image for r in old if r.status not in ("misclassified", "error") and not all(r.file_fooled.values())}
done = {r.image for r in load_rows(out, args.config)}
bases = [b for b in prepare_bases(discover([args.images])[:args.limit], out / "bases")
         if b.path.name in failed and b.path.name not in done]
print(f"{len(bases)} images to re-attack", flush=True)
model = load_model(args.model, device="cpu")
attack_config(model, MemberPanel(model), bases, out, args.config, steps=args.steps, seed=0, batch_size=4,
              quantizer=args.quantize)
