"""Given names, family names and street names by language.

Common names of each language, combined at random: the people are fictional, but their
names carry the accents, particles and double surnames that de-identification must cope
with (Núñez, Müller, D'Angelo, van der Berg, Wiśniewska, Järvinen, Conceição).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class NameBook:
    male: tuple[str, ...]
    female: tuple[str, ...]
    family: tuple[str, ...]
    streets: tuple[str, ...]  # with {n} where the house number goes
    two_surnames: bool = False  # Iberian: father's and mother's family name
    female_family: dict[str, str] | None = None  # Polish -ski/-ska and the like


NAME_BOOKS: dict[str, NameBook] = {
    "es": NameBook(
        ("Antonio", "José", "Manuel", "Francisco", "Javier", "David", "Juan", "Carlos",
         "Miguel Ángel", "Álvaro", "Sergio", "Raúl", "Jesús", "Íñigo"),
        ("María", "Carmen", "Ana", "Laura", "Isabel", "Lucía", "Cristina", "Marta",
         "María José", "Pilar", "Elena", "Nuria", "Begoña", "Ainhoa"),
        ("García", "Rodríguez", "González", "Fernández", "López", "Martínez", "Sánchez",
         "Pérez", "Gómez", "Martín", "Jiménez", "Ruiz", "Hernández", "Díaz", "Moreno",
         "Muñoz", "Álvarez", "Romero", "Núñez", "Iglesias", "Castaño", "Ibáñez"),
        ("Calle Mayor {n}", "Avenida de América {n}", "Calle de Alcalá {n}",
         "Paseo de la Castellana {n}", "Calle del Olmo {n}", "Plaza de España {n}"),
        two_surnames=True,
    ),
    "de": NameBook(
        ("Thomas", "Michael", "Andreas", "Stefan", "Jürgen", "Klaus", "Matthias", "Lukas",
         "Jörg", "Uwe", "Tobias", "Maximilian"),
        ("Sabine", "Petra", "Monika", "Ursula", "Claudia", "Anna", "Julia", "Katharina",
         "Brigitte", "Sophie", "Lena", "Käthe"),
        ("Müller", "Schmidt", "Schneider", "Fischer", "Weber", "Meyer", "Wagner", "Becker",
         "Schulz", "Hoffmann", "Schäfer", "Koch", "Bauer", "Richter", "Klein", "Wolf",
         "Schröder", "Neumann", "Zimmermann", "Krüger", "von Bülow", "Weiß"),
        ("Hauptstraße {n}", "Lindenallee {n}", "Goethestraße {n}", "Am Rheinufer {n}",
         "Schillerplatz {n}", "Kirchweg {n}"),
    ),
    "fr": NameBook(
        ("Jean", "Pierre", "Michel", "Philippe", "Alain", "Nicolas", "François", "Éric",
         "Jean-Luc", "Thierry", "Stéphane", "Jérôme"),
        ("Marie", "Nathalie", "Isabelle", "Sylvie", "Catherine", "Françoise", "Hélène",
         "Sophie", "Valérie", "Céline", "Anne-Laure", "Chloé"),
        ("Martin", "Bernard", "Dubois", "Thomas", "Robert", "Richard", "Petit", "Durand",
         "Leroy", "Moreau", "Simon", "Laurent", "Lefèvre", "Michel", "Garcia", "Fournier",
         "Girard", "Bonnet", "Dupont", "Lambert", "Faure", "de la Fontaine"),
        ("{n} rue de la République", "{n} avenue Jean Jaurès", "{n} rue Victor Hugo",
         "{n} boulevard de Strasbourg", "{n} chemin des Vignes", "{n} place du Capitole"),
    ),
    "it": NameBook(
        ("Giuseppe", "Giovanni", "Antonio", "Mario", "Luigi", "Francesco", "Alessandro",
         "Andrea", "Stefano", "Niccolò", "Matteo", "Lorenzo"),
        ("Maria", "Anna", "Giuseppina", "Rosa", "Angela", "Giovanna", "Francesca", "Chiara",
         "Giulia", "Lucia", "Federica", "Martina"),
        ("Rossi", "Russo", "Ferrari", "Esposito", "Bianchi", "Romano", "Colombo", "Ricci",
         "Marino", "Greco", "Bruno", "Gallo", "Conti", "De Luca", "Mancini", "Costa",
         "Giordano", "Rizzo", "Lombardi", "Moretti", "D'Angelo", "Fabbri"),
        ("Via Roma {n}", "Via Giuseppe Garibaldi {n}", "Corso Buenos Aires {n}",
         "Via Dante {n}", "Viale Monza {n}", "Piazza della Repubblica {n}"),
    ),
    "nl": NameBook(
        ("Jan", "Pieter", "Hendrik", "Johannes", "Willem", "Cornelis", "Daan", "Sander",
         "Bram", "Joost", "Ruud", "Thijs"),
        ("Maria", "Anna", "Johanna", "Elisabeth", "Cornelia", "Sanne", "Lotte", "Femke",
         "Anouk", "Marloes", "Ingrid", "Eline"),
        ("de Jong", "Jansen", "de Vries", "van den Berg", "van Dijk", "Bakker", "Janssen",
         "Visser", "Smit", "Meijer", "de Boer", "Mulder", "de Groot", "Bos", "Vos", "Peters",
         "Hendriks", "van Leeuwen", "Dekker", "Brouwer", "van der Meer", "Jacobs"),
        ("Kerkstraat {n}", "Dorpsstraat {n}", "Molenweg {n}", "Prinsengracht {n}",
         "Amstelveenseweg {n}", "Julianalaan {n}"),
    ),
    "pl": NameBook(
        ("Piotr", "Krzysztof", "Andrzej", "Tomasz", "Paweł", "Michał", "Marcin", "Jakub",
         "Łukasz", "Grzegorz", "Wojciech", "Mateusz"),
        ("Anna", "Maria", "Katarzyna", "Małgorzata", "Agnieszka", "Barbara", "Ewa",
         "Krystyna", "Magdalena", "Joanna", "Zofia", "Jadwiga"),
        ("Nowak", "Kowalski", "Wiśniewski", "Wójcik", "Kowalczyk", "Kamiński", "Lewandowski",
         "Zieliński", "Szymański", "Woźniak", "Dąbrowski", "Kozłowski", "Jankowski",
         "Mazur", "Kwiatkowski", "Krawczyk", "Piotrowski", "Grabowski"),
        ("ul. Floriańska {n}", "ul. Długa {n}", "ul. Mickiewicza {n}",
         "al. Jana Pawła II {n}", "ul. Kościuszki {n}", "os. Słoneczne {n}"),
        female_family={"ski": "ska", "cki": "cka", "dzki": "dzka"},
    ),
    "fi": NameBook(
        ("Juha", "Timo", "Matti", "Kari", "Mikko", "Jari", "Antti", "Jukka", "Mika", "Pekka",
         "Väinö", "Eero"),
        ("Maria", "Helena", "Johanna", "Anneli", "Kaarina", "Marjatta", "Anna", "Liisa",
         "Päivi", "Tuula", "Sari", "Aino"),
        ("Korhonen", "Virtanen", "Mäkinen", "Nieminen", "Mäkelä", "Hämäläinen", "Laine",
         "Heikkinen", "Koskinen", "Järvinen", "Lehtonen", "Lehtinen", "Saarinen",
         "Salminen", "Heinonen", "Niemi", "Heikkilä", "Kinnunen"),
        ("Mannerheimintie {n}", "Aleksanterinkatu {n}", "Kauppakatu {n}", "Koivutie {n}",
         "Rantatie {n}", "Puistokatu {n}"),
    ),
    "pt": NameBook(
        ("João", "José", "António", "Francisco", "Manuel", "Pedro", "Luís", "Rui", "Tiago",
         "Gonçalo", "Nuno", "Sebastião"),
        ("Maria", "Ana", "Joana", "Beatriz", "Mariana", "Inês", "Sofia", "Catarina",
         "Conceição", "Leonor", "Rita", "Fátima"),
        ("Silva", "Santos", "Ferreira", "Pereira", "Oliveira", "Costa", "Rodrigues",
         "Martins", "Jesus", "Sousa", "Fernandes", "Gonçalves", "Gomes", "Lopes", "Marques",
         "Alves", "Ribeiro", "Simões", "Magalhães", "Conceição"),
        ("Rua Augusta {n}", "Avenida da Liberdade {n}", "Rua do Ouro {n}",
         "Travessa das Flores {n}", "Largo do Carmo {n}", "Rua da Prata {n}"),
        two_surnames=True,
    ),
    "el": NameBook(
        ("Georgios", "Ioannis", "Konstantinos", "Dimitrios", "Nikolaos", "Panagiotis"),
        ("Maria", "Eleni", "Aikaterini", "Vasiliki", "Sofia", "Angeliki"),
        ("Papadopoulos", "Papadakis", "Georgiou", "Oikonomou", "Nikolaidis", "Vlachos",
         "Karagiannis", "Pappas"),
        (),
        female_family={"os": "ou", "is": "i", "as": "a"},
    ),
    "ro": NameBook(
        ("Andrei", "Alexandru", "Mihai", "Ionuț", "Constantin", "Gheorghe"),
        ("Elena", "Ioana", "Maria", "Andreea", "Mihaela", "Ștefania"),
        ("Popescu", "Ionescu", "Popa", "Radu", "Dumitru", "Stan", "Stoica", "Munteanu"),
        (),
    ),
    "sv": NameBook(
        ("Lars", "Anders", "Johan", "Erik", "Per", "Björn"),
        ("Anna", "Eva", "Karin", "Kristina", "Ingrid", "Åsa"),
        ("Andersson", "Johansson", "Karlsson", "Nilsson", "Eriksson", "Larsson", "Öberg",
         "Lindqvist"),
        (),
    ),
}
# Languages of the residents of a site besides the local one: neighbours and migrants.
MIGRANT_LANGUAGES = ("es", "de", "fr", "it", "nl", "pl", "fi", "pt", "el", "ro", "sv")
