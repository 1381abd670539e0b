"""Plausible wrong answers to notebook 5's auto-graded exercises; each must score 0."""

WRONG = {
    "q1": [
        # The difference the other way round.
        """gap = (evaluation(state.model, heldout_data)['sparse_categorical_accuracy']
       - evaluation(state.model, eval_train_data)['sparse_categorical_accuracy'])
""",
        # The last round's training metrics instead of an evaluation of the final model.
        """gap = metrics['sparse_categorical_accuracy'] - evaluation(state.model, heldout_data)['sparse_categorical_accuracy']
""",
        # The tutorial's test data: the three training writers' own test examples.
        """gap = (evaluation(state.model, eval_train_data)['sparse_categorical_accuracy']
       - evaluation(state.model, make_federated_data(emnist_test, sample_clients, epochs=1))['sparse_categorical_accuracy'])
""",
        # The loss instead of the accuracy.
        """gap = evaluation(state.model, eval_train_data)['loss'] - evaluation(state.model, heldout_data)['loss']
""",
        # A guess of the right size (what the old public check let through: any float in [-1, 1]).
        """gap = 0.3
""",
    ],
    "q2": [
        # One federated evaluation of all twenty writers together, given to every writer.
        """together = evaluation(state.model, make_federated_data(emnist_test, unseen_writers, epochs=1))
per_writer_accuracy = {writer: float(together['sparse_categorical_accuracy']) for writer in unseen_writers}
""",
        # The writers' training data instead of their test data.
        """per_writer_accuracy = {}
for writer in unseen_writers:
    writer_data = make_federated_data(emnist_train, [writer], epochs=1)
    per_writer_accuracy[writer] = float(evaluation(state.model, writer_data)['sparse_categorical_accuracy'])
""",
        # The first twenty test writers, which include the three training writers.
        """per_writer_accuracy = {}
for writer in emnist_test.client_ids[:20]:
    writer_data = make_federated_data(emnist_test, [writer], epochs=1)
    per_writer_accuracy[writer] = float(evaluation(state.model, writer_data)['sparse_categorical_accuracy'])
""",
        # The right keys with made-up values (what the old public check let through).
        """per_writer_accuracy = {w: 0.5 for w in unseen_writers}
""",
    ],
}
