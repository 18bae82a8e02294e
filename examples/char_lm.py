"""A character-level language model: Embedding -> stateful LSTM -> TimeDistributed(Dense),
trained with truncated backpropagation through time on a generated text.

The text is generated here from a small random grammar (so there is no licence to track):
sentences such as "the old cat sees a red fox." The model reads the text as ``--streams``
parallel streams, ``--window`` characters at a time; the LSTM is stateful, so its state
flows from one window to the next while the gradient stops at the window boundary
(truncated BPTT). It reports the per-character cross-entropy against the unigram entropy of
the text (what a model without context achieves), then samples some text.

Run: ``python examples/char_lm.py --backend numba`` (under a minute on 2 cores).
"""

from __future__ import annotations

import argparse
import os
import time

# Small per-step matrix products: one BLAS thread is faster here (see adding_problem.py).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

import fastnn  # noqa: E402
from fastnn import LSTM, Dense, Embedding, Sequential, TimeDistributed  # noqa: E402
from fastnn.losses import SparseCategoricalCrossentropy  # noqa: E402

SUBJECTS = ["cat", "dog", "fox", "bird", "fish", "child", "farmer", "queen"]
ADJECTIVES = ["old", "red", "small", "quick", "lazy", "green", "happy", "quiet"]
VERBS = ["sees", "likes", "follows", "finds", "watches", "meets", "hears"]
PLACES = ["in the garden", "by the river", "near the house", "under the tree"]


def generate_text(n_sentences: int, rng: np.random.Generator) -> str:
    """Sentences from a small grammar: determiner, optional adjective, noun, verb, object."""

    def noun_phrase() -> str:
        det = "the" if rng.random() < 0.6 else "a"
        adj = f"{rng.choice(ADJECTIVES)} " if rng.random() < 0.5 else ""
        return f"{det} {adj}{rng.choice(SUBJECTS)}"

    sentences = []
    for _ in range(n_sentences):
        s = f"{noun_phrase()} {rng.choice(VERBS)} {noun_phrase()}"
        if rng.random() < 0.3:
            s += f" {rng.choice(PLACES)}"
        sentences.append(s + ".")
    return " ".join(sentences)


def unigram_entropy(ids: np.ndarray, vocab: int) -> float:
    """Cross-entropy (nats per character) of predicting every character by its frequency."""
    p = np.bincount(ids, minlength=vocab) / ids.size
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def sample(model: Sequential, lstm: LSTM, seed_ids: list[int], length: int,
           rng: np.random.Generator, temperature: float) -> list[int]:
    """Feed ``seed_ids`` one by one, then draw ``length`` characters from the model."""
    be = model.backend
    lstm.reset_states()
    out = list(seed_ids)
    logits = None
    for i in seed_ids:
        logits = model.forward(be.asarray(np.array([[i]], dtype=np.int64)))
    for _ in range(length):
        z = be.to_numpy(logits)[0, -1].astype(np.float64) / temperature
        p = np.exp(z - z.max())
        p /= p.sum()
        nxt = int(rng.choice(p.size, p=p))
        out.append(nxt)
        logits = model.forward(be.asarray(np.array([[nxt]], dtype=np.int64)))
    return out


def main(argv: list[str] | None = None) -> float:
    """Train, print the losses and a sample; return the final training cross-entropy."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="numba", choices=fastnn.backends.NAMES)
    parser.add_argument("--sentences", type=int, default=3000)
    parser.add_argument("--streams", type=int, default=32, help="parallel streams (batch)")
    parser.add_argument("--window", type=int, default=40, help="truncated BPTT length")
    parser.add_argument("--units", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    fastnn.set_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    text = generate_text(args.sentences, rng)
    chars = sorted(set(text))
    index = {c: i for i, c in enumerate(chars)}
    vocab = len(chars)
    ids = np.array([index[c] for c in text], dtype=np.int64)
    per_stream = (ids.size - 1) // args.streams
    windows = per_stream // args.window
    usable = windows * args.window
    inputs = ids[: args.streams * per_stream].reshape(args.streams, per_stream)[:, :usable]
    targets = ids[1: args.streams * per_stream + 1].reshape(args.streams, per_stream)[:, :usable]

    lstm = LSTM(args.units, return_sequences=True, stateful=True)
    model = Sequential([Embedding(vocab, 32), lstm, TimeDistributed(Dense(vocab))],
                       backend=args.backend)
    model.build((args.window,))
    loss = SparseCategoricalCrossentropy(from_logits=True, backend=model.backend)
    optimizer = fastnn.Adam(learning_rate=0.005, global_clipnorm=1.0, backend=model.backend)
    be = model.backend
    baseline = unigram_entropy(ids, vocab)
    print(f"text: {len(text)} characters, {vocab} symbols; {args.streams} streams x "
          f"{windows} windows of {args.window}; unigram entropy {baseline:.3f} nats/char")
    for layer in model.layers:
        layer.reuse_buffers = True
    model.layers[0].need_input_grad = False
    start = time.perf_counter()
    mean = float("nan")
    for epoch in range(args.epochs):
        lstm.reset_states()  # each epoch starts the streams afresh
        total = 0.0
        for w in range(windows):
            cols = slice(w * args.window, (w + 1) * args.window)
            xb = be.asarray(np.ascontiguousarray(inputs[:, cols]))
            yb = be.asarray(np.ascontiguousarray(targets[:, cols]).reshape(-1))
            logits = model.forward(xb, training=True)
            total += float(loss.forward(logits.reshape(-1, vocab), yb))
            dlogits = loss.backward().reshape(logits.shape)
            model.backward(dlogits)  # stops at the window: the carried state is a constant
            optimizer.update(model.params, model.grads)
        mean = total / windows
        print(f"epoch {epoch + 1}/{args.epochs}: cross-entropy {mean:.3f} nats/char "
              f"(unigram {baseline:.3f}), {time.perf_counter() - start:.1f} s")
    for layer in model.layers:
        layer.release_buffers()
    seed_text = "the "
    drawn = sample(model, lstm, [index[c] for c in seed_text], 200, rng, temperature=0.7)
    print("sample:", "".join(chars[i] for i in drawn))
    return mean


if __name__ == "__main__":
    main()
