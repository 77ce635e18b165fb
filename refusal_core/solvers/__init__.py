"""The solvers that turn a layer's statistics into an edit, and the linear algebra they share.

linalg     round-off rules, ordered eigendecompositions, the SVD that stores a map (shared by all)
span       C = C_r - alpha' C_e solved in the span of the rows, or densely from moments
rank_one   the paper's edit: one direction d per layer (cpca, pca, mean_diff)
keep       a direction kept off the keep prompts' leading directions
closed_form  a map per layer (UCE-style least squares) for concepts that live in several directions

refusal_core.factorize picks one by name and assembles its RefusalEdit.
"""
