"""Entry point `mlflow run . -e mae`: masked-image pretraining of an encoder (params: see MLproject or --help).

Reads: `pretrain_dataset` (the corpus; default `dataset`) and `dataset` (labelled, for the linear probe).
Writes: figures/*.png (reconstructions of hidden patches), encoder/ and a registered version.
"""

from train_stage import main_for

if __name__ == "__main__":
    main_for("mae")
