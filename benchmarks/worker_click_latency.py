"""Click-to-fix through the model worker, as napari's Curate dock does it: from a click to the
corrected mask back in napari's process (torch-free here, like napari).

    python benchmarks/worker_click_latency.py --data ../shared/data/isic2018 --n 8 --clicks 10

Held-out ISIC images (512 x 512, the benchmark half of heldout.isic_split): each image's first
mask is the bundled model's (computed by the worker), then the standard simulated user's clicks
(click_to_fix_user.next_click); each click is timed from sending the image, mask and clicks to
the worker's ``click_refine`` job until ``ClickSession.apply_proposal`` has the new mask (the
locality rule included), after ``prepare_clicks`` as napari's *Fix with clicks* sends it. napari's own drawing of the changed pixels is not included (BENCHMARKS
§7 measured the whole napari path for the random walker).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from click_to_fix_user import next_click  # noqa: E402  (torch-free)
from common import save_json  # noqa: E402  (torch-free)

from napari_skinseg.image_io import read_image, read_mask  # noqa: E402
from napari_skinseg.interactive import ClickSession  # noqa: E402
from napari_skinseg.pairs import find_pairs  # noqa: E402
from napari_skinseg.worker_client import WorkerClient  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True)
    p.add_argument("--n", type=int, default=8)
    p.add_argument("--clicks", type=int, default=10)
    p.add_argument("--out", default="benchmarks/results/worker_click_latency.json")
    args = p.parse_args()
    client = WorkerClient()
    info = client.call("model_info")
    # the bundled model's 419 ISIC validation images, as compare_models.py recorded them (reading
    # them from the model file would need torch in this process)
    recorded = json.loads((Path(__file__).parent / "results" / "compare_models.json").read_text())
    names = set(next(v for k, v in recorded["per_image_jaccard"].items()
                     if k.endswith("/isic_val419")))
    scan = find_pairs(Path(args.data) / "images", Path(args.data) / "masks")
    pairs = [q for q in scan.pairs if q.name in names]
    rng = np.random.default_rng(12)
    pairs = [pairs[i] for i in sorted(rng.choice(len(pairs), size=args.n, replace=False))]
    times, ious = [], []
    for pair in pairs:
        image = read_image(pair.image)
        truth = read_mask(pair.mask, shape=image.shape[:2])
        probability = dict(client.submit("predict", images=[("x", image)]).stream())["x"]
        session = ClickSession(image, probability=probability)
        # as napari's "Fix with clicks" does before the person's first click
        client.call("prepare_clicks", image=session.image, mask=session.mask)
        for _ in range(args.clicks):
            click = next_click(session.mask, truth)
            if click is None:
                break
            y, x, lesion = click
            t = time.perf_counter()
            proposal = client.call("click_refine", image=session.image, mask=session.mask,
                                   clicks=session.clicks_with(y, x, lesion))
            session.apply_proposal(y, x, lesion, proposal)
            times.append(time.perf_counter() - t)
        inter, union = (session.mask & truth).sum(), (session.mask | truth).sum()
        ious.append(float(inter / union) if union else 1.0)
    client.shutdown()
    heavy = [m for m in ("torch", "torchvision", "segmentation_models_pytorch") if m in sys.modules]
    ms = np.array(times) * 1000
    result = {"command": " ".join(["python", *sys.argv]), "model": info["name"],
              "n_images": len(pairs), "n_clicks": len(times),
              "ms_median": float(np.median(ms)), "ms_p95": float(np.percentile(ms, 95)),
              "ms_max": float(ms.max()), "ms_first_click": float(ms[0]),
              "ms_max_after_first": float(ms[1:].max()), "mean_iou_after": float(np.mean(ious)),
              "torch_imported_in_this_process": heavy}
    print(json.dumps(result, indent=1))
    save_json(result, args.out)


if __name__ == "__main__":
    main()
