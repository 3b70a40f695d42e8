"""tfnas: differentiable architecture search (DARTS, Fair DARTS, Noisy DARTS) in Keras 3."""
