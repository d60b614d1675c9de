"""Using a trained model: predict, evidence, export."""
