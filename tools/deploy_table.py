"""The file table and op lists of docs/deploy.md, from the files in exports/ (run after re-exporting).

    .venv/bin/python tools/deploy_table.py [exports]

Prints Markdown: one row per export (size, classes, input/output tensors with their quantization,
op count) and each distinct graph's op list, computed by LiteRT's interpreter without its default
delegate so that the graph's own operators are listed.
"""

from __future__ import annotations

import collections
import json
import sys
from pathlib import Path


def ops(path):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    it = Interpreter(model_path=str(path), experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    it.allocate_tensors()
    details = {t["index"]: t for t in it.get_tensor_details()}
    count = collections.Counter()
    for op in it._get_ops_details():
        ins = [details[i]["dtype"].__name__ for i in op["inputs"] if i >= 0 and i in details][:1]
        outs = [details[i]["dtype"].__name__ for i in op["outputs"] if i in details][:1]
        count[(op["op_name"], f"{'/'.join(ins) or '-'} → {'/'.join(outs) or '-'}")] += 1
    return it, count


def tensor(d):
    scale, zero = d["quantization"]
    q = f", scale {scale:.4f}, zero point {zero}" if scale else ""
    return f"`{tuple(int(v) for v in d['shape'])}` {d['dtype'].__name__}{q}"


def main(folder="exports"):
    rows, graphs = [], {}
    for p in sorted(Path(folder).glob("*.tflite")):
        it, count = ops(p)
        card = json.loads(p.with_suffix(".json").read_text()) if p.with_suffix(".json").is_file() else {}
        names = card.get("class_names") or []
        ins, outs = it.get_input_details(), it.get_output_details()
        out = tensor(outs[0]) if len(outs) == 1 else f"{len(outs)} tensors (see its card)"
        rows.append(f"| `{p.name}` ({p.stat().st_size / 1e6:.2f} MB) | {len(names)} classes ({', '.join(names)}) | "
                    f"{tensor(ins[0])} | {out} | {card.get('quantization', '?')} | {sum(count.values())} |")
        graphs.setdefault(tuple(sorted(count.items())), []).append(p.name)
    print("| export | task | input | output | weights / maths | ops (graph) |\n| --- | --- | --- | --- | --- | --- |")
    print("\n".join(rows))
    for key, files in graphs.items():
        print(f"\n**{', '.join(files)}** ({sum(n for _, n in key)} ops):\n\n| op | tensors | count |\n| --- | --- | --- |")
        for (name, types), n in sorted(key, key=lambda kv: -kv[1]):
            print(f"| {name} | {types} | {n} |")


if __name__ == "__main__":
    main(*sys.argv[1:])
