"""The technician's terminal UI (Textual). It calls only ``fleet.Fleet``."""
