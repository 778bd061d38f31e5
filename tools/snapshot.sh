# Sourced by the long-run scripts (tools/train_*.sh): copy the code of checkout $1 to $2 once (or
# again with REFRESH=1), so that edits in the work tree during a run of hours cannot change it.
# $2/COMMIT and $2/DIRTY record what was copied.
snapshot_code() {
    local here=$1 src=$2 d
    if [ ! -d "$src/kseg" ] || [ "${REFRESH:-0}" = 1 ]; then
        mkdir -p "$src"
        for d in kseg benchmarks configs tools apps exports; do
            rm -rf "${src:?}/$d"
            cp -r "$here/$d" "$src/$d"
        done
        (cd "$here" && git rev-parse HEAD > "$src/COMMIT" && git status --short > "$src/DIRTY" || true)
        echo "snapshot of $here ($(cat "$src/COMMIT")) in $src"
    fi
}
