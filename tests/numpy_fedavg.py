"""Federated Averaging in plain NumPy, written to read like the paper.

An independent reference for the tests: no TensorFlow, float64, a loop per
client, per epoch, per batch. Softmax regression (784 -> 10) with
cross-entropy, as in the tutorial.
"""
import numpy as np


def softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def client_update(w, b, x, y, lr, batch_size, epochs):
    """Local SGD over `epochs` passes, in order (no shuffling); returns weights and loss sum."""
    w, b = w.copy(), b.copy()
    stream = np.tile(np.arange(len(y)), epochs)
    loss_sum = correct = 0.0
    for start in range(0, len(stream), batch_size):
        idx = stream[start:start + batch_size]
        xb, yb = x[idx], y[idx]
        p = softmax(xb @ w + b)
        loss_sum += -np.log(p[np.arange(len(yb)), yb]).sum()
        correct += (p.argmax(axis=1) == yb).sum()
        grad = p.copy()
        grad[np.arange(len(yb)), yb] -= 1.0
        grad /= len(yb)
        w -= lr * xb.T @ grad
        b -= lr * grad.sum(axis=0)
    return w, b, len(stream), loss_sum, correct


def fedavg(clients, rounds, lr=0.02, batch_size=20, epochs=10, server_lr=1.0):
    """Runs FedAvg from zero weights; returns per-round (loss, accuracy) and the final weights."""
    w, b = np.zeros((784, 10)), np.zeros(10)
    history = []
    for _ in range(rounds):
        results = [client_update(w, b, x.astype(np.float64), y, lr, batch_size, epochs) for x, y in clients]
        n = np.array([r[2] for r in results], np.float64)
        avg_w = sum(r[0] * k for r, k in zip(results, n)) / n.sum()
        avg_b = sum(r[1] * k for r, k in zip(results, n)) / n.sum()
        w, b = w + server_lr * (avg_w - w), b + server_lr * (avg_b - b)
        history.append((sum(r[3] for r in results) / n.sum(), sum(r[4] for r in results) / n.sum()))
    return history, (w, b)


def evaluate(w, b, clients):
    """Loss and accuracy of (w, b) over all clients' examples."""
    x = np.concatenate([c[0] for c in clients]).astype(np.float64)
    y = np.concatenate([c[1] for c in clients])
    p = softmax(x @ w + b)
    return -np.log(p[np.arange(len(y)), y]).mean(), (p.argmax(axis=1) == y).mean()
