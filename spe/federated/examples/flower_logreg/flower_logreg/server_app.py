"""flower_logreg: a Flower ServerApp (Message API), as in Flower's quickstart templates."""

from pathlib import Path

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

from flower_logreg import task

# Create ServerApp
app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Main entry point for the ServerApp: Newton's method, one train round per step."""
    # Read run config
    num_rounds: int = context.run_config["num-server-rounds"]

    # FedAvg chooses the nodes, sends the messages and averages the replies weighted by
    # their num-examples: here their gradients and Hessians, so the average is the pooled
    # data's and the step below is a step of the model trained on the pooled data.
    strategy = FedAvg(
        fraction_train=context.run_config["fraction-train"],
        fraction_evaluate=context.run_config["fraction-evaluate"],
    )
    # newton = false: gradient steps of `learning-rate` instead (under differential privacy,
    # where the noise on 90 Hessian entries would swamp the step; 9 gradient entries less so).
    newton = bool(context.run_config.get("newton", True))
    rate = float(context.run_config.get("learning-rate", 1.0))
    w = np.zeros(task.N_PARAMS)
    for server_round in range(1, num_rounds + 1):
        # The global model, with a placeholder of the Hessian's shape: a reply carries
        # the arrays it was sent, in shape (the node gate's contract).
        request = ArrayRecord([w, np.zeros((task.N_PARAMS, task.N_PARAMS))] if newton
                              else [w])
        replies = grid.send_and_receive(
            strategy.configure_train(server_round, request, ConfigRecord(), grid))
        pooled, _ = strategy.aggregate_train(server_round, replies)
        if pooled is None:  # no node answered this round
            continue
        if newton:
            gradient, hessian = pooled.to_numpy_ndarrays()
            w = task.newton_step(w, gradient, hessian)
        else:
            [gradient] = pooled.to_numpy_ndarrays()
            w = w - rate * gradient
        model = ArrayRecord(task.to_arrays(w))
        replies = grid.send_and_receive(
            strategy.configure_evaluate(server_round, model, ConfigRecord(), grid))
        strategy.aggregate_evaluate(server_round, replies)

    # Save final model to disk: the sandbox's output, which the SPE's airlock reviews
    print("\nSaving final model to disk...")
    np.savez(Path(context.run_config["model-path"]), *task.to_arrays(w))
