# One markdown table row per ml-eval report (docs/ml.md, "Model quality on unseen seeds"):
# the dataset seed, detector: model's macro F1 and per-class F1, the normal runs with a raise,
# overheating runs detected with the median and largest delay (s), cavitation's median and
# largest delay (s). Usage: jq -r -f scripts/ml-seeds.jq eval-*.json
.dataset.seed as $s | .results[] | select(.detector == "model") |
  (.windows.per_class | map({(.class): .f1}) | add) as $f |
  (.detection.per_class | map({(.class): .}) | add) as $d |
  "| \($s) | \(.windows.macro_f1 * 1000 | round / 1000) | \([$f.normal, $f.bearing_wear, $f.cavitation, $f.overheating, $f.stuck_sensor] | map(. * 1000 | round / 1000 | tostring) | join(" | ")) | \(.detection.false_alarms.normal_runs_alarmed)/\(.detection.false_alarms.normal_runs) | \($d.overheating.detected)/\($d.overheating.runs), \($d.overheating.median_s), \($d.overheating.max_s) | \($d.cavitation.median_s), \($d.cavitation.max_s) |"
