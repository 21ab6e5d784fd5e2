"""ser-serve: many calls at once in one process, from the streams telephony platforms send."""
