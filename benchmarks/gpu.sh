#!/usr/bin/env bash
# The GPU run, prepared as one command: on a machine with a GPU (install with ".[cuda]"),
#
#     MDL_DATA_DIR=DIR bash benchmarks/gpu.sh OUT
#
# writes into OUT, as JSON to commit: devices.json (what ran it), throughput.json (the
# throughput benchmark, without the CPU's NumPy baselines), cost/results.json (the cost study
# up to N = 3200) and fig2/results.json (Fig. 2 at FIG2_ARGS, default 5 seeds x 30 epochs and
# panel (c) up to N = 3200,
# stopped after FIG2_SECONDS, default 480: a stopped Fig. 2 keeps its finished grids, and
# running the script again continues it), and steps.json (each step's seconds and exit status).
#
#     MDL_DATA_DIR=DIR bash benchmarks/gpu.sh OUT --tiny
#
# runs the same steps at settings that take about a minute on a CPU (the test suite does).
set -uo pipefail
out=${1:?usage: MDL_DATA_DIR=DIR bash benchmarks/gpu.sh OUT [--tiny]}
tiny=${2:-}
: "${MDL_DATA_DIR:?set MDL_DATA_DIR to a folder of the four MNIST IDX files}"
py=${PYTHON:-python}
cd "$(dirname "$0")/.."
mkdir -p "$out"
if [[ "$tiny" == "--tiny" ]]; then
    throughput_args=(--n-train 1000 --timed-epochs 1 --sweep-seeds 1 --max-padding 1)
    cost_args=(--quick --set 'widths=[50]' --set 'methods=["bp","mdl"]' --set n_train=1000 --set 'least_modes=[[50,5]]' --set target_accuracy=0.6)
    fig2_args=(--quick --set 'panels="c"' --set 'widths=[25]' --set 'width_modes=[2,5]' --set 'baselines=["bp"]' --set epochs=1)
    fig2_seconds=300
else
    throughput_args=()
    cost_args=()
    read -r -a fig2_args <<< "${FIG2_ARGS:---set seeds=5 --set epochs=30 --set lr_halving_epochs=10 --set widths=[10,25,50,100,200,400,800,1600,3200]}"
    fig2_seconds=${FIG2_SECONDS:-480}
fi
steps=()
step() {  # step NAME SECONDS COMMAND...: runs it with a time limit, records its seconds and exit status
    local name=$1 limit=$2 start=$SECONDS status
    shift 2
    timeout "$limit" "$@"
    status=$?
    steps+=("\"$name\": {\"seconds\": $((SECONDS - start)), \"status\": $status}")
    echo "gpu.sh: $name finished with status $status" >&2
}
"$py" -c "import jax, json; print(json.dumps({'jax': jax.__version__, 'backend': jax.default_backend(), 'devices': [d.device_kind for d in jax.devices()]}))" > "$out/devices.json"
step throughput 600 "$py" benchmarks/throughput.py --json --no-numpy "${throughput_args[@]}" > "$out/throughput.json"
resume() { [[ -f "$1/config.json" ]] && echo --resume; }
step cost 900 "$py" -m experiments.cost --out "$out/cost" $(resume "$out/cost") "${cost_args[@]}"
step fig2 "$fig2_seconds" "$py" -m experiments.fig2 --out "$out/fig2" $(resume "$out/fig2") "${fig2_args[@]}"
(IFS=,; echo "{${steps[*]}}") > "$out/steps.json"
cat "$out/steps.json"
