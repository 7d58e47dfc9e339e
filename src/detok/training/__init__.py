"""Training loops (one readable function each) and the pieces they share."""
