#!/usr/bin/env bash
# seed_gguf.sh CORPUS_DIR — seeds for fuzz_gguf: the first 64 KiB of each shared
# model (tensor data then lies past the end: the reader must say so) and a few
# small valid GGUF files built here with Python's standard library only.
set -euo pipefail
dir=${1:?usage: seed_gguf.sh CORPUS_DIR}
mkdir -p "$dir"
models=${QTUNE_MODELS:-../shared/models}
for f in "$models"/*.gguf; do
    [ -f "$f" ] || continue
    head -c 65536 "$f" >"$dir/seed-head-$(basename "$f")"
done
command -v python3 >/dev/null || exit 0
python3 - "$dir" <<'PY'
import struct, sys, os

out = sys.argv[1]

def s(x):
    b = x.encode()
    return struct.pack('<Q', len(b)) + b

def kv(key, vtype, payload):
    return s(key) + struct.pack('<I', vtype) + payload

def tensor(name, ne, ggml_type, off):
    return (s(name) + struct.pack('<I', len(ne)) + b''.join(struct.pack('<Q', n) for n in ne)
            + struct.pack('<IQ', ggml_type, off))

def gguf(kvs, infos, data, align=32, version=3):
    head = b'GGUF' + struct.pack('<IQQ', version, len(infos), len(kvs)) + b''.join(kvs)
    head += b''.join(infos)
    head += b'\0' * (-len(head) % align)
    return head + data

def write(name, blob):
    with open(os.path.join(out, name), 'wb') as fp:
        fp.write(blob)

every = [
    kv('general.architecture', 8, s('llama')),
    kv('u8', 0, b'\x07'), kv('i8', 1, b'\xf9'), kv('u16', 2, struct.pack('<H', 700)),
    kv('i16', 3, struct.pack('<h', -700)), kv('u32', 4, struct.pack('<I', 70000)),
    kv('i32', 5, struct.pack('<i', -70000)), kv('f32', 6, struct.pack('<f', 1e-5)),
    kv('bool', 7, b'\x01'), kv('u64', 10, struct.pack('<Q', 1 << 40)),
    kv('i64', 11, struct.pack('<q', -(1 << 40))), kv('f64', 12, struct.pack('<d', 0.25)),
    kv('tokens', 9, struct.pack('<IQ', 8, 3) + s('<unk>') + s('<s>') + s('')),
    kv('scores', 9, struct.pack('<IQ', 6, 3) + struct.pack('<3f', 0, -1, -2)),
    kv('types', 9, struct.pack('<IQ', 5, 3) + struct.pack('<3i', 2, 3, 1)),
]
infos = [tensor('token_embd.weight', [4, 3], 0, 0), tensor('norm', [4], 1, 64),
         tensor('q8', [32, 2], 8, 96), tensor('unknown', [8], 200, 192)]
data = bytes(range(48)) + b'\0' * 16 + bytes(8) + b'\0' * 24 + bytes(68) + b'\0' * 28 + bytes(32)
write('seed-every-type.gguf', gguf(every, infos, data))
write('seed-align64.gguf',
      gguf([kv('general.alignment', 4, struct.pack('<I', 64))],
           [tensor('a', [16], 0, 0), tensor('b', [2, 2, 2, 2], 30, 64)],
           bytes(64) + bytes(32), align=64))
write('seed-v2-empty.gguf', gguf([kv('general.name', 8, s('x'))], [], b'', version=2))
PY
