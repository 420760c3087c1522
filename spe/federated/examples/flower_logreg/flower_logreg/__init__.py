"""flower_logreg: a Flower app, federated logistic regression."""
