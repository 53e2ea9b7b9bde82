// Pure logic lives here: credit ledger, session state machine, validation (see the sluiced issue).
import SluiceProtocol
