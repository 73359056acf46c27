"""Training of every network of the method: losses, VGG16 perceptual features (training only), batches of
synthetic/real old photos, one trainer per stage (scratch, vae, mapping, face) and the shared loop with
resumable checkpoints. Entry points: ``oldphoto train ...`` (oldphoto/cli/train.py) and
``oldphoto.training.runner.train_stage``."""
