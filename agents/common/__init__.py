"""The building blocks every agent shares: policies, episodes, the linear baseline, curvature
and optimisation maths, numerical guards and the batched sampler."""
