"""What a trained model does and looks at: test metrics, the seeded prediction grid, attributions (guided backprop, Grad-CAM), filters, their figures."""
