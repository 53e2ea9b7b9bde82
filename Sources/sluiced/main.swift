print("sluiced: not built yet")
