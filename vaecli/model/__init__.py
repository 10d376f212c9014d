"""The networks and their maths: one-layer and hierarchical VAEs, priors, likelihoods, the objective."""
