"""flower_logreg: a Flower ClientApp (Message API), as in Flower's quickstart templates."""

from pathlib import Path

from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from flower_logreg import task

# The node's data: the permit's staged extract (Flower's templates load a flwr-datasets
# partition by context.node_config["partition-id"] instead).
EXTRACT = Path("/extract")

# Flower ClientApp
app = ClientApp()


@app.train()
def train(msg: Message, context: Context):
    """The gradient and Hessian of the local loss at the global model (a Newton round), or
    the gradient alone when the request carries no Hessian's placeholder."""
    arrays = msg.content["arrays"].to_numpy_ndarrays()
    w = arrays[0]
    X_train, y_train, _, _ = task.load_extract(EXTRACT, context.run_config)
    gradient, hessian = task.gradient_hessian(w, X_train, y_train, context.run_config["l2"])
    model_record = ArrayRecord([gradient, hessian] if len(arrays) > 1 else [gradient])
    train_loss = task.loss(task.to_arrays(w), X_train, y_train, context.run_config["l2"])
    metrics = {"train_loss": train_loss, "num-examples": len(X_train)}
    content = RecordDict({"arrays": model_record, "metrics": MetricRecord(metrics)})
    return Message(content=content, reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context):
    """Evaluate the model on local data."""
    arrays = msg.content["arrays"].to_numpy_ndarrays()
    _, _, X_test, y_test = task.load_extract(EXTRACT, context.run_config)
    eval_loss, eval_acc = task.evaluate(arrays, X_test, y_test)
    metrics = {"eval_loss": eval_loss, "eval_acc": eval_acc, "num-examples": len(X_test)}
    content = RecordDict({"metrics": MetricRecord(metrics)})
    return Message(content=content, reply_to=msg)
