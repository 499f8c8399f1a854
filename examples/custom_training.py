"""Your own training loop under frugalml budgets (the README's Python API example).

    python examples/custom_training.py
"""

import numpy as np

import frugalml


def train(trial: frugalml.Trial, steps: int = 300) -> None:
    """Least squares by minibatch gradient descent on synthetic data."""
    rng = np.random.default_rng(0)
    batch = trial.params["batch_size"]
    X, w_true = rng.standard_normal((20_000, 50)), rng.standard_normal(50)
    y = X @ w_true
    w = np.zeros(50)
    trial.reset_clock()                          # set-up above is not step time
    for step in range(steps):
        i = (step * batch) % (len(X) - batch)
        Xb, yb = X[i : i + batch], y[i : i + batch]
        grad = Xb.T @ (Xb @ w - yb) / batch
        w -= trial.params["learning_rate"] * grad
        if trial.step(loss=float(np.mean((Xb @ w - yb) ** 2)), n_samples=batch):
            trial.report(val_loss=float(np.mean((X[-2000:] @ w - y[-2000:]) ** 2)))


study = frugalml.Study(
    name="custom",
    workloads=[frugalml.Workload(train=train, max_steps=300, eval_every=50),
               frugalml.Workload(dataset="diabetes", algorithm="svm", eval_every=10)],
    search=frugalml.Search(space={"batch_size": [30, 300], "learning_rate": [0.1, 0.01]}),
    budget={"max_memory_mb": 400, "max_mean_step_ms": 50},
    stopping={"patience": 5},
    workers=2,
)

if __name__ == "__main__":                       # trials run in worker processes
    result = frugalml.tune(study, fresh=True)
    print(result.best_feasible("train").params, result.best_feasible("diabetes-svm").params)
    print(f"saved {result.compute().saved_cpu_s:.1f} CPU-s")
