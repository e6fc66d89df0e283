"""Entry point `mlflow run . -e multitask`: train the multitask objective (params: see MLproject or --help).

Reads: `dataset` (preset, dataset dir or DeepLense folders). Writes: figures/*.png and encoder/.
"""

from train_stage import main_for

if __name__ == "__main__":
    main_for("multitask")
