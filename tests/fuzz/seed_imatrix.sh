#!/usr/bin/env bash
# seed_imatrix.sh CORPUS_DIR — seeds for fuzz_imatrix: the first 64 KiB of the
# shared llama.cpp imatrix files (the .dat then ends inside an entry, the GGUF
# inside its tensor data: both must be refused) and small valid files of both
# formats built here with Python's standard library only.
set -euo pipefail
dir=${1:?usage: seed_imatrix.sh CORPUS_DIR}
mkdir -p "$dir"
models=${QTUNE_MODELS:-../shared/models}
for f in "$models"/calcuis_imatrix.dat "$models"/calcuis_imatrix-from-dat.imatrix.gguf; do
    [ -f "$f" ] || continue
    head -c 65536 "$f" >"$dir/seed-head-$(basename "$f")"
done
command -v python3 >/dev/null || exit 0
python3 - "$dir" <<'PY'
import os, struct, sys

out = sys.argv[1]

def write(name, blob):
    with open(os.path.join(out, name), 'wb') as fp:
        fp.write(blob)

# legacy .dat: i32 n; per entry i32 len, name, i32 ncall, i32 nval, f32 values;
# optional i32 last_chunk, i32 len, dataset name
def entry(name, ncall, vals):
    b = name.encode()
    return (struct.pack('<i', len(b)) + b + struct.pack('<ii', ncall, len(vals))
            + struct.pack('<%df' % len(vals), *vals))

body = struct.pack('<i', 3) + entry('blk.0.attn_q.weight', 10, [float(i) for i in range(16)]) \
    + entry('blk.0.ffn_down.weight', 0, [0.5] * 8) + entry('output.weight', 3, [1.0, 2.0])
write('seed-dat-tail.dat', body + struct.pack('<ii', 10, 9) + b'calib.txt')
write('seed-dat-lastchunk.dat', body + struct.pack('<i', 10))
write('seed-dat-bare.dat', body)

# GGUF imatrix: general.type, imatrix.* keys, NAME.in_sum2 [n, n_mat] and
# NAME.counts [1, n_mat], F32
def s(x):
    b = x.encode()
    return struct.pack('<Q', len(b)) + b

def kv(key, vtype, payload):
    return s(key) + struct.pack('<I', vtype) + payload

def gguf(kvs, tensors):
    infos, data = b'', b''
    for name, ne, vals in tensors:
        data += b'\0' * (-len(data) % 32)
        infos += s(name) + struct.pack('<I', len(ne)) + b''.join(struct.pack('<Q', n) for n in ne)
        infos += struct.pack('<IQ', 0, len(data))
        data += struct.pack('<%df' % len(vals), *vals)
    head = b'GGUF' + struct.pack('<IQQ', 3, len(tensors), len(kvs)) + b''.join(kvs) + infos
    head += b'\0' * (-len(head) % 32)
    return head + data

meta = [kv('general.type', 8, s('imatrix')),
        kv('imatrix.datasets', 9, struct.pack('<IQ', 8, 1) + s('calib.txt')),
        kv('imatrix.chunk_count', 4, struct.pack('<I', 3)),
        kv('imatrix.chunk_size', 4, struct.pack('<I', 512))]
tens = [('blk.0.attn_q.weight.in_sum2', [8, 1], [float(i) for i in range(8)]),
        ('blk.0.attn_q.weight.counts', [1, 1], [1536.0]),
        ('blk.0.ffn_up_exps.weight.in_sum2', [4, 2], [1.0] * 8),
        ('blk.0.ffn_up_exps.weight.in_sum', [4, 2], [0.5] * 8),
        ('blk.0.ffn_up_exps.weight.counts', [1, 2], [512.0, 0.0])]
write('seed-imatrix.gguf', gguf(meta, tens))
write('seed-imatrix-nometa.gguf', gguf([], tens[:2]))
PY
