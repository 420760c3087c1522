"""Code that runs inside the sandbox as a round's step: self-contained (the analysis
environment has numpy, pandas, pydicom, scikit-learn, flwr; never `spe`)."""
